"""BullMQ workers for a set of queues, run as one structured unit.

:class:`QueueWorkers` is an async context manager: entering starts one ``bullmq.Worker`` per
queue (each in a task it owns), leaving closes them, which lets the jobs in hand finish and
leaves the others waiting in Redis. A worker loop that dies is not ignored:
:meth:`QueueWorkers.wait` raises its error.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from bullmq import Worker

from mlsup import defaults
from mlsup.queues.processor import JobProcessor

__all__ = ["QueueWorkers"]

log = logging.getLogger("mlsup.queues")


class QueueWorkers:
    """One BullMQ worker per processor, on ``connection`` (a Redis URL) under ``prefix``."""

    def __init__(
        self,
        processors: Sequence[JobProcessor],
        connection: str,
        prefix: str,
        *,
        stop_grace_s: float = defaults.QUEUE_STOP_GRACE_S,
    ) -> None:
        self.processors = list(processors)
        self.connection = connection
        self.prefix = prefix
        self.stop_grace_s = stop_grace_s
        self._workers: list[Worker] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> QueueWorkers:
        for processor in self.processors:
            spec = processor.spec
            worker = Worker(
                spec.name,
                processor,
                {
                    "connection": self.connection,
                    "prefix": self.prefix,
                    "concurrency": spec.concurrency,
                    "lockDuration": spec.lock_duration_ms,
                    "stalledInterval": spec.stalled_interval_ms,
                    # Redis client names (CLIENT SETNAME) allow no spaces.
                    "name": re.sub(r"[^\w.:-]", "-", f"mlsup:{spec.model}"),
                    "autorun": False,  # its loop runs in a task of ours, not a stray one
                },
            )
            worker.on("error", lambda exc, *job, name=spec.name: _log_error(name, exc))
            self._workers.append(worker)
            task = asyncio.create_task(worker.run(), name=f"queue {spec.name}")
            task.add_done_callback(_report_end)  # said at once, and re-raised by wait()
            self._tasks.append(task)
        return self

    async def wait(self) -> None:
        """Until a worker loop ends, which only closing should do; re-raises its error."""
        if not self._tasks:
            await asyncio.Event().wait()
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
        raise RuntimeError(f"queue worker {next(iter(done)).get_name()!r} stopped by itself")

    async def close(self) -> None:
        """Stop taking jobs, let those in hand finish within ``stop_grace_s``, and close every
        connection. Jobs still running then are abandoned: their locks expire and BullMQ
        hands them to the next runner (their attempt is not counted as failed)."""
        workers, self._workers = self._workers, []
        tasks, self._tasks = self._tasks, []
        closing = asyncio.gather(*(w.close() for w in workers), return_exceptions=True)
        late_waits = asyncio.ensure_future(_cancel_late_waits(workers, closing))
        try:
            await asyncio.wait_for(asyncio.shield(closing), self.stop_grace_s)
        except asyncio.TimeoutError:
            log.warning("jobs still running after %g s; abandoning them", self.stop_grace_s)
            await asyncio.gather(*(w.close(force=True) for w in workers), return_exceptions=True)
            await closing
        finally:
            late_waits.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                log.error("a queue worker failed while closing: %r", result)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def _cancel_late_waits(workers: Sequence[Any], closing: asyncio.Future[Any]) -> None:
    """Cancel each worker's idle wait for jobs until ``closing`` is done.

    ``bullmq.Worker.close`` cancels the wait it finds, but a fetch that was between steps when
    close began starts its BZPOPMIN wait afterwards; close then waits for that wait, which
    could hold it for the whole stop grace (seen: 60 s in 2 of 8 runs of the kit queue test).
    Cancelling an idle wait loses nothing: no job was taken, and bullmq expects this
    cancellation while closing.
    """
    while not closing.done():
        for worker in workers:
            waiting = worker.waiting
            if waiting is not None and not waiting.done():
                waiting.cancel()
        await asyncio.wait({closing}, timeout=defaults.QUEUE_CLOSE_POLL_S)


def _log_error(queue: str, exc: Any) -> None:
    log.error("queue %s: %s", queue, exc)


def _report_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s: its worker loop failed: %r", task.get_name(), task.exception())
