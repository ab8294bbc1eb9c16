"""mlsup.kit.queue: a feature serves a queue with its own managed model, no supervisor; the
model loads on the first job and serves every operation it has."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from mlsup.errors import JobFailed
from mlsup.jobs import JobQueues
from mlsup.kit.leases import GPUBoss, Priority
from mlsup.kit.managed import ManagedModel, ManagedModelLoader, ManagedModelState
from mlsup.kit.queue import serve_queue
from mlsup.testing.loaders import ProbeLoader, ProbeModel
from mlsup.testing.redis import TestRedis

from .conftest import BossFactory


async def queued_for_vram(boss: GPUBoss, vram_mb: int, timeout: float = 20.0) -> None:
    """Wait until a request for ``vram_mb`` MB waits in GPU 0's queue (seen in Redis)."""
    deadline = time.monotonic() + timeout
    while not any(mb == vram_mb for _, mb, _ in (await boss.snapshot())[0].waiting):
        assert time.monotonic() < deadline, f"no {vram_mb} MB request queued on GPU 0"
        await asyncio.sleep(0.02)


class KitModel:
    """A managed probe model (LOW, 900 MB on GPU 0 of 1000 MB) that a queue loads on demand;
    every model it loaded, in order."""

    def __init__(self, loader: ManagedModelLoader, path: Path, redis: TestRedis, prefix: str):
        self.loader, self.path = loader, path
        self.redis_url, self.prefix = redis.url, prefix
        self.loaded: list[ManagedModel] = []

    @asynccontextmanager
    async def serve(self, op: str, **options: Any) -> AsyncIterator[JobQueues]:
        """Serve the queue "kit" with this model while the block runs; a producer for it."""
        url, prefix = self.redis_url, self.prefix
        async with (
            serve_queue("kit", self.load, op=op, redis_url=url, redis_prefix=prefix, **options),
            JobQueues(url, redis_prefix=prefix) as jobs,
        ):
            yield jobs

    async def load(self) -> Any:
        model = await self.loader.load(
            self.path, model_id="kit", vram_mb=900, priority=Priority.LOW, gpu=0, timeout=30
        )
        self.loaded.append(model)
        return model


@pytest.fixture
def kit(
    make_boss: BossFactory, tmp_path: Path, redis_server: TestRedis, redis_prefix: str
) -> KitModel:
    path = tmp_path / "probe.txt"
    path.write_text("probe\n")
    return KitModel(
        ManagedModelLoader(make_boss(), ProbeLoader()), path, redis_server, redis_prefix
    )


async def test_a_feature_serves_a_queue_with_its_managed_model(kit: KitModel) -> None:
    loader, loaded = kit.loader, kit.loaded
    async with kit.serve("embed", concurrency=2) as jobs:
        assert loaded == []  # nothing loads before the first job
        vectors = await jobs.run("kit", {"input": ["a", "b"]}, timeout=30)
        echoed = await jobs.run("kit", {"op": "run", "inputs": {"x": 1}}, timeout=30)
        refused = await jobs.add("kit", {"op": "tokenize", "text": "a"})
        with pytest.raises(JobFailed, match="has no 'tokenize'"):
            await jobs.result("kit", refused, timeout=30)
        counts = await jobs.counts("kit")
    await loader.unload_all()
    assert vectors == ProbeModel(8).embed(["a", "b"]).tolist()
    assert echoed == {"x": 1}
    assert len(loaded) == 1
    assert (counts["completed"], counts["failed"]) == (2, 1)


@pytest.mark.timeout(120)
async def test_jobs_around_a_preemption_finish_and_the_next_one_waits_for_the_reload(
    kit: KitModel, make_boss: BossFactory
) -> None:
    loader, loaded, high_boss = kit.loader, kit.loaded, make_boss()
    async with kit.serve("run", model_wait_s=60) as jobs:
        assert await jobs.run("kit", {"inputs": {"n": 1}}, timeout=30) == {"n": 1}
        running = await jobs.add("kit", {"inputs": {"sleep": 1.0}})
        while loaded[0].calls_in_flight == 0:
            await asyncio.sleep(0.01)
        # GPU 0 has 1000 MB: HIGH 500 MB takes it from the LOW 900 MB model.
        high = await high_boss.acquire(500, "high", priority=Priority.HIGH, gpu=0, timeout=10)
        assert loaded[0].state is ManagedModelState.PREEMPTED
        # The call in flight was let finish on the preempted model.
        assert await jobs.result("kit", running, timeout=30) == {"sleep": 1.0}
        waiting = await jobs.add("kit", {"inputs": {"n": 2}})
        # The job meets the preempted model, and its reload queues behind the HIGH lease.
        await queued_for_vram(high_boss, 900)
        assert (await jobs.counts("kit"))["active"] == 1
        await high_boss.release(high)
        assert await asyncio.wait_for(jobs.result("kit", waiting, timeout=30), 40) == {"n": 2}
    await loader.unload_all()
    assert [m.state for m in loaded] == [ManagedModelState.PREEMPTED, ManagedModelState.UNLOADED]
