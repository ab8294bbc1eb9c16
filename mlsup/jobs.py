"""Produce jobs from Python: add a job to a queue served by mlsup and await its result.

What a Node producer does with BullMQ's ``Queue`` and ``QueueEvents``, with a deadline::

    import mlsup.jobs

    async with mlsup.jobs.JobQueues() as queues:        # the supervisor's Redis
        text = await queues.run("summaries", {"messages": [...], "max_tokens": 64}, timeout=60)
        job_id = await queues.add("embeddings", {"input": ["a cat"]})
        vectors = await queues.result("embeddings", job_id, timeout=30)

A job that fails for good raises :class:`~mlsup.errors.JobFailed` with BullMQ's
``failedReason``; no result within the deadline raises :class:`~mlsup.errors.RequestTimeout`
(the job itself stays queued). Jobs get :data:`~mlsup.defaults.QUEUE_ATTEMPTS` attempts with
exponential backoff unless told otherwise.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import redis.asyncio
from bullmq import Queue

from mlsup import defaults
from mlsup.errors import ConfigError, JobFailed, RequestTimeout
from mlsup.kit.redis_url import resolve_redis_url
from mlsup.queues.config import queue_prefix

__all__ = ["JobQueues"]

#: While a result is awaited, the job's state is also read this often (seconds), in case its
#: event was trimmed from the stream before it was read.
_STATE_POLL_S = 2.0
#: Longest block of one XREAD on a queue's event stream (ms).
_EVENTS_BLOCK_MS = 5000


class _Results:
    """The completed and failed events of one queue, matched to the jobs awaited.

    It reads BullMQ's event stream itself (XREAD on a connection of its own, without retries)
    rather than through ``bullmq.QueueEvents``, whose close can hang on a retrying read.
    """

    def __init__(self, name: str, connection: str, stream: str) -> None:
        self.name = name
        self.stream = stream
        self.waiting: dict[str, asyncio.Future[tuple[bool, Any]]] = {}
        self._client = redis.asyncio.Redis.from_url(connection, decode_responses=True)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # Read from the stream's current end, fixed before any job is added: an event written
        # between now and the first read is not missed (as "$" would miss it).
        newest: Any = await self._client.xrevrange(self.stream, count=1)
        last = newest[0][0] if newest else "0-0"
        self._task = asyncio.create_task(self._read(last), name=f"results of {self.name}")

    async def _read(self, after: str) -> None:
        while True:
            reply: Any = await self._client.xread({self.stream: after}, block=_EVENTS_BLOCK_MS)
            for _stream, entries in reply or ():
                for entry_id, fields in entries:
                    after = entry_id
                    self._settle(fields)

    def _settle(self, fields: Mapping[str, str]) -> None:
        event = fields.get("event")
        future = self.waiting.get(str(fields.get("jobId")))
        if future is None or future.done() or event not in ("completed", "failed"):
            return
        if event == "failed":
            future.set_result((False, fields.get("failedReason")))
            return
        try:
            future.set_result((True, json.loads(fields.get("returnvalue", "null"))))
        except ValueError:
            future.set_result((True, fields.get("returnvalue")))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._client.aclose()


class JobQueues:
    """A producer for BullMQ queues on one Redis: :meth:`add`, :meth:`result`, :meth:`run`.

    ``redis_url``: default ``$MLSUP_REDIS_URL``, else the running supervisor's embedded Redis.
    ``redis_prefix``: the ``[redis] prefix`` of the supervisor's mlsup.toml (keys are then
    ``<redis_prefix>bull:<queue>:...``, as the queue runner uses).
    """

    def __init__(self, redis_url: str | None = None, *, redis_prefix: str = "") -> None:
        self.connection = resolve_redis_url(redis_url)
        self.prefix = queue_prefix(redis_prefix)
        self._queues: dict[str, Queue] = {}
        self._results: dict[str, _Results] = {}
        self._lock = asyncio.Lock()

    async def _queue(self, name: str) -> tuple[Queue, _Results]:
        if not name or ":" in name:
            raise ConfigError(f"queue name {name!r} must be non-empty and without ':'")
        async with self._lock:
            if name not in self._queues:
                queue = Queue(name, {"connection": self.connection, "prefix": self.prefix})
                results = _Results(name, self.connection, queue.keys["events"])
                await results.start()
                self._queues[name], self._results[name] = queue, results
            return self._queues[name], self._results[name]

    async def add(
        self,
        queue: str,
        data: Mapping[str, Any],
        *,
        attempts: int = defaults.QUEUE_ATTEMPTS,
        backoff_ms: int = defaults.QUEUE_BACKOFF_MS,
        job_id: str | None = None,
        **options: Any,
    ) -> str:
        """Add a job (``data``: the operation's arguments); its id. ``options``: more BullMQ
        job options (``priority``, ``delay``, ``removeOnComplete``...)."""
        bull_queue, _ = await self._queue(queue)
        job_id = job_id or uuid.uuid4().hex
        opts = {
            "jobId": job_id,
            "attempts": attempts,
            "backoff": {"type": "exponential", "delay": backoff_ms},
            **options,
        }
        name = str(data.get("op", "job"))
        await bull_queue.add(name, dict(data), opts)
        return job_id

    async def result(
        self, queue: str, job_id: str, *, timeout: float = defaults.JOB_RESULT_TIMEOUT_S
    ) -> Any:
        """The job's return value; JobFailed, or RequestTimeout past ``timeout`` seconds."""
        bull_queue, results = await self._queue(queue)
        loop = asyncio.get_running_loop()
        # Registered before the state is first read: an event is either seen by the state
        # read or delivered to this future afterwards, never lost in between.
        future = results.waiting.setdefault(job_id, loop.create_future())
        give_up = loop.time() + timeout
        try:
            while not future.done():
                await self._settle_from_state(bull_queue, job_id, future)
                left = give_up - loop.time()
                if left <= 0:
                    raise RequestTimeout(
                        f"job {job_id} of queue {queue!r} gave no result within {timeout:g} s; "
                        "it stays queued (is `mlsup start` running with this [queues] table?)",
                        queue=queue, job=job_id, timeout=timeout,
                    )  # fmt: skip
                await asyncio.wait({future}, timeout=min(left, _STATE_POLL_S))
        finally:
            results.waiting.pop(job_id, None)
        completed, value = future.result()
        if not completed:
            raise JobFailed(
                f"job {job_id} of queue {queue!r} failed: {value}",
                queue=queue, job=job_id, reason=str(value),
            )  # fmt: skip
        return value

    async def _settle_from_state(
        self, queue: Queue, job_id: str, future: asyncio.Future[tuple[bool, Any]]
    ) -> None:
        state = await queue.getJobState(job_id)
        if state not in ("completed", "failed") or future.done():
            return
        job = await queue.getJob(job_id)
        if job is not None and not future.done():  # the event may have come meanwhile
            done = state == "completed"
            future.set_result((done, job.returnvalue if done else job.failedReason))

    async def run(
        self,
        queue: str,
        data: Mapping[str, Any],
        *,
        timeout: float = defaults.JOB_RESULT_TIMEOUT_S,
        **options: Any,
    ) -> Any:
        """:meth:`add` then :meth:`result`."""
        job_id = await self.add(queue, data, **options)
        return await self.result(queue, job_id, timeout=timeout)

    async def counts(self, queue: str) -> dict[str, int]:
        """Jobs of ``queue`` by state (waiting, active, completed, failed, delayed...)."""
        bull_queue, _ = await self._queue(queue)
        counts: dict[str, int] = await bull_queue.getJobCounts()
        return counts

    async def close(self) -> None:
        """Close every connection; results still awaited end with RequestTimeout."""
        queues, self._queues = list(self._queues.values()), {}
        results, self._results = list(self._results.values()), {}
        for waiter in results:
            await waiter.close()
        for queue in queues:
            await queue.close()

    async def __aenter__(self) -> JobQueues:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
