"""``mlsup bench queue``: jobs through a supervised queue against raw BullMQ and the proxy.

* job round trip (add -> result) through ``[queues.*]`` served by the supervisor's queue runner,
  with the probe model's no-op ``run({})``, against raw BullMQ in the same run: a ``bullmq``
  Worker with a no-op processor and the same add -> completed-event wait (target <= 1.2x);
* MiniLM embedding jobs/s through a queue of concurrency 2 against the async proxy's embed
  calls/s from 2 concurrent callers (target >= 0.9x).

Ours and the baseline alternate in blocks, so that machine noise hits both alike.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bullmq import Queue, QueueEvents, Worker

from mlsup.bench.rows import Row, percentile
from mlsup.bench.supervised import probe_model, supervisor
from mlsup.bench.workloads import by_kind
from mlsup.jobs import JobQueues
from mlsup.proxy import aconnect
from mlsup.queues.config import load_queues, queue_prefix

__all__ = ["run"]

SUITE = "queue"
_TEXTS = ["A cat sits on the mat.", "A kitten rests on a rug.", "Stocks fell today."]


def _queue(name: str, model: str, op: str, concurrency: int = 1) -> str:
    return f'[queues.{name}]\nmodel = "{model}"\nop = "{op}"\nconcurrency = {concurrency}\n\n'


class _RawBullMQ:
    """The baseline: a bullmq Worker with a no-op processor, and a producer that waits for the
    completed event, on the same Redis."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url, self.prefix = url, prefix
        self.waiting: dict[str, asyncio.Future[Any]] = {}

    async def __aenter__(self) -> _RawBullMQ:
        async def noop(job: Any, token: str) -> Any:
            return job.data

        options = {"connection": self.url, "prefix": self.prefix}
        self.queue = Queue("raw", options)
        newest = await self.queue.client.xrevrange(self.queue.keys["events"], count=1)
        self.events = QueueEvents(
            "raw", {**options, "autorun": False, "lastEventId": newest[0][0] if newest else "0"}
        )
        self.events.on("completed", self._completed)
        self.worker = Worker("raw", noop, {**options, "autorun": False})
        self.tasks = [
            asyncio.create_task(self.events.run()),
            asyncio.create_task(self.worker.run()),
        ]
        return self

    def _completed(self, args: dict[str, Any], _id: str) -> None:
        future = self.waiting.pop(str(args.get("jobId")), None)
        if future is not None:
            future.set_result(args.get("returnvalue"))

    async def round_trip(self, data: dict[str, Any]) -> Any:
        job = await self.queue.add("job", data)
        future = self.waiting.setdefault(job.id, asyncio.get_running_loop().create_future())
        return await asyncio.wait_for(future, 30)

    async def __aexit__(self, *exc: object) -> None:
        await self.worker.close()
        await self.events.close()
        await self.queue.close()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def _latencies(call: Callable[[], Awaitable[Any]], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - start)
    return samples


async def _round_trip_row(jobs: JobQueues, raw: _RawBullMQ, count: int) -> Row:
    async def ours() -> None:
        await jobs.run("noop", {"inputs": {}}, timeout=30)

    async def theirs() -> None:
        await raw.round_trip({"inputs": {}})

    for _ in range(3):  # warm-up: the model loads, connections open
        await ours()
        await theirs()
    mine: list[float] = []
    base: list[float] = []
    for _ in range(4):
        base += await _latencies(theirs, max(1, count // 4))
        mine += await _latencies(ours, max(1, count // 4))
    value, base_value = percentile(mine, 50) * 1e3, percentile(base, 50) * 1e3
    return Row(
        SUITE, "job round trip p50 (probe run({}) via [queues])", "ms", value,
        "raw BullMQ, no-op processor", base_value, "<= 1.2x", value <= 1.2 * base_value,
        None, tuple(mine), tuple(base),
    )  # fmt: skip


async def _throughput(call: Callable[[], Awaitable[Any]], count: int, callers: int) -> float:
    """Calls per second of ``count`` calls made by ``callers`` concurrent callers."""
    per_caller = max(1, count // callers)

    async def caller() -> None:
        for _ in range(per_caller):
            await call()

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return per_caller * callers / (time.perf_counter() - start)


async def _embed_row(jobs: JobQueues, runtime: Any, count: int) -> Row:
    proxy = await aconnect(runtime)
    try:
        model = proxy.model("minilm")

        async def by_job() -> None:
            await jobs.run("embeddings", {"input": _TEXTS}, timeout=60)

        async def by_proxy() -> None:
            await model.embed(_TEXTS)

        await by_job()
        await by_proxy()
        ours, theirs = [], []
        for _ in range(2):
            theirs.append(await _throughput(by_proxy, count // 2, callers=2))
            ours.append(await _throughput(by_job, count // 2, callers=2))
    finally:
        await proxy.close()
    value, base = sum(ours) / len(ours), sum(theirs) / len(theirs)
    return Row(
        SUITE, "minilm embed jobs/s (queue concurrency 2)", "jobs/s", value,
        "async proxy embed calls/s, 2 callers", base, ">= 0.9x", value >= 0.9 * base,
    )  # fmt: skip


async def _measure(sup: Any, quick: bool) -> list[Row]:
    manifest, _ = load_queues(sup.config)
    url = manifest.redis.url
    assert url is not None  # the bench supervisor always names its Redis
    prefix = queue_prefix(manifest.redis.prefix)
    async with (
        JobQueues(url, redis_prefix=manifest.redis.prefix) as jobs,
        _RawBullMQ(url, prefix) as raw,
    ):
        rows = [await _round_trip_row(jobs, raw, 40 if quick else 400)]
        rows.append(await _embed_row(jobs, sup.runtime, 20 if quick else 200))
    return rows


def run(quick: bool = False) -> list[Row]:
    models = (
        probe_model("probe", vram_mb=100, idle_timeout_s=0)
        + by_kind("minilm").manifest()
        + _queue("noop", "probe", "run")
        + _queue("embeddings", "minilm", "embed", concurrency=2)
    )
    with supervisor(models) as sup:
        return asyncio.run(_measure(sup, quick))
