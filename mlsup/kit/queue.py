"""Serve a BullMQ queue from a feature's own process, with a model it loads itself.

The seed's "each feature owns its ML runner", with jobs: the same job processing as the
supervisor's queue runner (:mod:`mlsup.queues`: validation, "not now" waits, retries, JSON
results), but the model is the feature's own, typically from a managed loader, started and
stopped by the feature's lifespan::

    from mlsup.kit.queue import serve_queue

    @contextlib.asynccontextmanager
    async def lifespan(app):
        loader = ManagedModelLoader(boss, GGUFModelLoader())
        async with serve_queue("summaries", lambda: loader.load(path, model_id="smollm2"),
                               op="chat", redis_url=REDIS_URL):
            yield                                # jobs are served while the app runs
        await loader.unload_all()

The model is loaded on the first job. When it is taken away (its lease preempted or lost),
the jobs in hand wait and the next try loads it again. Synchronous model methods run in a
worker thread, so that the event loop, and with it BullMQ's lock renewal, keeps running.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from mlsup import defaults
from mlsup.errors import InvalidJobData, LeaseLost, Preempted
from mlsup.kit.managed_model import ManagedModel
from mlsup.kit.redis_url import resolve_redis_url
from mlsup.queues.config import ALL_OPERATIONS, QueueSpec, queue_prefix
from mlsup.queues.jobdata import JobCall
from mlsup.queues.processor import JobProcessor
from mlsup.queues.workers import QueueWorkers

__all__ = ["InProcessModel", "serve_queue"]


class InProcessModel:
    """Calls on a model of this process, loaded by ``load`` on first use and after it is gone."""

    def __init__(self, load: Callable[[], Awaitable[Any]]) -> None:
        self._load = load
        self._model: Any = None
        self._lock = asyncio.Lock()

    async def _current(self) -> Any:
        async with self._lock:
            if self._model is None:
                self._model = await self._load()
            return self._model

    async def __call__(self, plan: JobCall) -> Any:
        model = await self._current()
        try:
            # A managed model offers every operation; what it serves is its loaded model's.
            inner = model.model if isinstance(model, ManagedModel) else model
            method = getattr(model, plan.op, None)
            if method is None or not hasattr(inner, plan.op):
                raise InvalidJobData(
                    f"invalid job data: op: this queue's model has no {plan.op!r}", field="op"
                )
            if inspect.iscoroutinefunction(method):
                return await method(*plan.args, **plan.kwargs)
            return await asyncio.to_thread(method, *plan.args, **plan.kwargs)
        except (Preempted, LeaseLost):
            async with self._lock:
                if self._model is model:
                    self._model = None  # load again on the next try
            raise


@asynccontextmanager
async def serve_queue(
    queue: str,
    load: Callable[[], Awaitable[Any]],
    *,
    op: str,
    redis_url: str | None = None,
    redis_prefix: str = "",
    concurrency: int = defaults.QUEUE_CONCURRENCY,
    attempts: int = defaults.QUEUE_ATTEMPTS,
    operations: frozenset[str] = ALL_OPERATIONS,
    model_wait_s: float = defaults.QUEUE_MODEL_WAIT_S,
) -> AsyncIterator[QueueWorkers]:
    """Serve ``queue`` while the block runs: jobs call ``op`` (or their ``"op"``) on the model
    that ``await load()`` returns. Leaving the block lets running jobs finish."""
    spec = QueueSpec(
        name=queue, model=f"{queue} (in-process)", op=op, operations=operations,
        concurrency=concurrency, attempts=attempts, model_wait_s=model_wait_s,
    )  # fmt: skip
    processor = JobProcessor(spec, InProcessModel(load))
    prefix = queue_prefix(redis_prefix)
    async with QueueWorkers([processor], resolve_redis_url(redis_url), prefix) as workers:
        yield workers
