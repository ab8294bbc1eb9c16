"""What happens to one job: validate its data, call the model until it is served, encode the
result. The same processing serves the supervisor's queue runner (models through the async
proxy) and a feature's own runner (:mod:`mlsup.kit.queue`, models in-process).

Errors decide a job's fate:

* invalid data fails the job at once (BullMQ's ``UnrecoverableError``): retrying cannot help;
* "not now" (:data:`NOT_NOW`: the model is loading, preempted, respawning, or waits for a
  lease) is waited out inside the attempt, within ``model_wait_s``, so a preemption or a crash
  costs the job nothing but time;
* anything else fails the attempt, and BullMQ retries it with the job's ``attempts`` and
  ``backoff`` (the queue's defaults when its producer set none).

The processor is a coroutine: the model call is awaited, never run on the event loop, so that
BullMQ's lock renewal keeps running while a long generation does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from bullmq import UnrecoverableError

from mlsup import defaults
from mlsup.errors import (
    CapacityExceeded,
    InvalidJobData,
    LeaseLost,
    LeaseTimeout,
    PeerGone,
    Preempted,
    WorkerCrashed,
)
from mlsup.queues.config import QueueSpec
from mlsup.queues.jobdata import JobCall, plan_call, result_json

__all__ = ["NOT_NOW", "JobProcessor", "ModelCall", "apply_job_defaults", "retry_pause"]

#: Errors meaning "the model cannot serve right now, but will": a job waits them out.
NOT_NOW: tuple[type[Exception], ...] = (
    Preempted,
    WorkerCrashed,
    PeerGone,
    LeaseTimeout,
    LeaseLost,
    CapacityExceeded,
)

#: Calls ``op(*args, **kwargs)`` on the queue's model and returns its result.
ModelCall = Callable[[JobCall], Awaitable[Any]]

log = logging.getLogger("mlsup.queues")


def retry_pause(tries: int) -> float:
    """Pause before the next try of a "not now" call after ``tries`` failed ones (seconds)."""
    pause = defaults.QUEUE_RETRY_PAUSE_S * 2.0 ** max(tries - 1, 0)
    return float(min(pause, defaults.QUEUE_RETRY_PAUSE_MAX_S))


def apply_job_defaults(opts: MutableMapping[str, Any], spec: QueueSpec) -> None:
    """Give a job the queue's ``attempts`` and ``backoff`` where its producer set none.

    BullMQ decides on retries in the worker from the job's options, so filling them in here is
    enough (0 attempts is BullMQ's "unset").
    """
    if not opts.get("attempts"):
        opts["attempts"] = spec.attempts
    if not opts.get("backoff"):
        opts["backoff"] = dict(spec.job_backoff())


class JobProcessor:
    """The BullMQ processor of one queue: ``await processor(job, token)`` -> JSON result."""

    def __init__(
        self,
        spec: QueueSpec,
        call: ModelCall,
        *,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self._call = call
        self._sleep = sleep
        self._clock = clock

    async def __call__(self, job: Any, token: str) -> Any:
        apply_job_defaults(job.opts, self.spec)
        try:
            plan = plan_call(job.data, self.spec.op, self.spec.operations)
            result = await self.served(plan, job_id=job.id)
        except InvalidJobData as exc:
            log.info("queue %s: job %s refused: %s", self.spec.name, job.id, exc)
            raise UnrecoverableError(str(exc)) from exc
        return result_json(plan.op, result)

    async def served(self, plan: JobCall, *, job_id: str | None = None) -> Any:
        """The model's result for ``plan``, waiting out "not now" within ``model_wait_s``."""
        give_up = self._clock() + self.spec.model_wait_s
        tries = 0
        while True:
            try:
                return await self._call(plan)
            except NOT_NOW as exc:
                tries += 1
                pause = retry_pause(tries)
                if self._clock() + pause > give_up:
                    raise
                log.info(
                    "queue %s: job %s waits for model %s (%s); try %d in %.2f s",
                    self.spec.name, job_id, self.spec.model, type(exc).__name__, tries + 1,
                    pause,
                )  # fmt: skip
                await self._sleep(pause)
