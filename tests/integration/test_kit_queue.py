"""mlsup.kit.queue: a feature serves a queue with its own managed model, no supervisor; the
model loads on the first job and serves every operation it has."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlsup.errors import JobFailed
from mlsup.jobs import JobQueues
from mlsup.kit.leases import Priority
from mlsup.kit.managed import ManagedModelLoader
from mlsup.kit.queue import serve_queue
from mlsup.testing.loaders import ProbeLoader, ProbeModel
from mlsup.testing.redis import TestRedis

from .conftest import BossFactory


async def test_a_feature_serves_a_queue_with_its_managed_model(
    make_boss: BossFactory, redis_server: TestRedis, redis_prefix: str, tmp_path: Path
) -> None:
    path = tmp_path / "probe.txt"
    path.write_text("probe\n")
    loader = ManagedModelLoader(make_boss(), ProbeLoader())
    loaded: list[Any] = []

    async def load() -> Any:
        model = await loader.load(
            path, model_id="kit", vram_mb=900, priority=Priority.LOW, gpu=0, timeout=30
        )
        loaded.append(model)
        return model

    async with (
        serve_queue(
            "kit", load, op="embed", redis_url=redis_server.url, redis_prefix=redis_prefix,
            concurrency=2,
        ),
        JobQueues(redis_server.url, redis_prefix=redis_prefix) as jobs,
    ):  # fmt: skip
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
