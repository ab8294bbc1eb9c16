"""Managed loaders: real leases in the test Redis, real tiny models."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlsup.errors import LeaseLost, ModelError, ModelLoadError, ModelNotFound, ModelOOM, Preempted
from mlsup.kit.leases import GPUBoss, Priority
from mlsup.kit.leases.keys import LeaseKeys
from mlsup.kit.loaders import ONNXLoader
from mlsup.kit.managed import (
    DiffusersManagedLoader,
    HFManagedLoader,
    ManagedModel,
    ManagedModelLoader,
    ManagedModelState,
)
from mlsup.testing import tiny_models
from mlsup.testing.redis import TestRedis

from .conftest import BossFactory

X = np.ones((2, 4), np.float32)


@pytest.fixture(scope="module")
def onnx_path() -> Path:
    return tiny_models.tiny_onnx()


async def lease_ids(boss: GPUBoss, gpu: int = 0) -> list[tuple[str, int]]:
    """(model id, MB) of every live lease on ``gpu``, as any process would see them."""
    return [(x.model_id, x.vram_mb) for x in (await boss.snapshot())[gpu].leases]


async def until(predicate: Any, what: str, timeout: float = 10.0) -> None:
    """Wait for ``predicate()`` (a background reaction), failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_lease_is_held_while_loaded_and_released_on_unload(
    make_boss: BossFactory, onnx_path: Path
) -> None:
    boss = make_boss()
    loader = ManagedModelLoader(boss, ONNXLoader())
    model = await loader.load(onnx_path, model_id="mlp", vram_mb=300, gpu=0)
    assert await lease_ids(boss) == [("mlp", 300)]
    assert model.loaded and model.lease.held and loader.get("mlp") is model
    assert (await model.run({"x": X}))["y"].shape == (2, 3)
    await loader.unload("mlp")
    assert await lease_ids(boss) == []
    assert model.state is ManagedModelState.UNLOADED and model.lease.released
    with pytest.raises(ModelError, match="was unloaded"):
        await model.run({"x": X})
    with pytest.raises(ModelNotFound):
        loader.get("mlp")
    await loader.unload("mlp")  # unloading twice does nothing


async def test_vram_defaults_to_the_loaders_estimate(
    make_boss: BossFactory, onnx_path: Path
) -> None:
    boss = make_boss()
    loader = ManagedModelLoader(boss, ONNXLoader())
    await loader.load(onnx_path, model_id="mlp", gpu=0)
    assert await lease_ids(boss) == [("mlp", ONNXLoader().estimate_vram(onnx_path))]
    await loader.unload_all()


async def test_a_failed_load_leaves_no_lease(make_boss: BossFactory, tmp_path: Path) -> None:
    boss = make_boss()
    loader = ManagedModelLoader(boss, ONNXLoader())
    with pytest.raises(ModelLoadError, match=r"missing\.onnx"):
        await loader.load(tmp_path / "missing.onnx", model_id="m", vram_mb=300, gpu=0)
    assert await lease_ids(boss) == [] and boss.held == [] and loader.models == {}


class OOMOnLoad(ONNXLoader):
    """Stands in for a GPU that runs out of memory while the model loads (this machine has
    no GPU); the lease, the error translation and the cleanup are real."""

    def _load(self, path: Path, options: Mapping[str, Any]) -> Any:
        raise MemoryError("CUDA out of memory (simulated GPU)")


async def test_oom_while_loading_releases_the_lease(
    make_boss: BossFactory, onnx_path: Path
) -> None:
    boss = make_boss()
    loader = ManagedModelLoader(boss, OOMOnLoad())
    with pytest.raises(ModelOOM):
        await loader.load(onnx_path, model_id="m", vram_mb=300, gpu=0)
    assert await lease_ids(boss) == [] and boss.held == []


async def test_concurrent_loads_of_one_id_share_one_load(
    make_boss: BossFactory, onnx_path: Path
) -> None:
    boss = make_boss()
    loader = ManagedModelLoader(boss, ONNXLoader())
    first, second = await asyncio.gather(
        loader.load(onnx_path, model_id="mlp", vram_mb=300, gpu=0),
        loader.load(onnx_path, model_id="mlp", vram_mb=300, gpu=0),
    )
    assert first is second
    assert await lease_ids(boss) == [("mlp", 300)]
    assert await loader.load(onnx_path, model_id="mlp", vram_mb=300) is first
    await loader.unload_all()


async def test_preemption_unloads_the_model_and_frees_the_lease(
    make_boss: BossFactory, onnx_path: Path
) -> None:
    low_boss, high_boss = make_boss(), make_boss()
    loader = ManagedModelLoader(low_boss, ONNXLoader())
    low = await loader.load(onnx_path, model_id="low", vram_mb=900, priority=Priority.LOW, gpu=0)
    # GPU 0 has 1000 MB: the HIGH request fits only once the LOW model is gone.
    high = await high_boss.acquire(500, "high", priority=Priority.HIGH, gpu=0, timeout=10)
    assert high.held
    assert low.state is ManagedModelState.PREEMPTED and loader.models == {}
    assert low.lease.released and low.lease.lost is None  # given back, not revoked
    assert await lease_ids(high_boss) == [("high", 500)]
    with pytest.raises(Preempted, match="'low'"):
        await low.run({"x": X})
    with pytest.raises(ModelNotFound):
        loader.get("low")


async def test_a_lost_lease_unloads_the_model(
    make_boss: BossFactory,
    onnx_path: Path,
    redis_server: TestRedis,
    redis_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    boss = make_boss()
    loader = ManagedModelLoader(boss, ONNXLoader())
    model = await loader.load(onnx_path, model_id="mlp", vram_mb=300, gpu=0)
    # Someone deletes the lease behind the holder's back: its next renewal finds it gone.
    keys, client = LeaseKeys(redis_prefix), redis_server.client()
    try:
        client.zrem(keys.leases(0), model.lease.id)
        client.delete(keys.lease(model.lease.id))
    finally:
        client.close()
    await until(lambda: model.state is not ManagedModelState.LOADED, "the model to be unloaded")
    assert model.state is ManagedModelState.LOST and loader.models == {}
    with pytest.raises(LeaseLost):
        await model.run({"x": X})
    assert boss.held == []
    await loader.unload_all()  # waits for the unload the loss started: it went well
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text


async def test_unload_all_releases_every_lease(make_boss: BossFactory, onnx_path: Path) -> None:
    boss = make_boss()
    loader = ManagedModelLoader(boss, ONNXLoader())
    models: list[ManagedModel] = [
        await loader.load(onnx_path, model_id=name, vram_mb=200, gpu=0) for name in ("a", "b")
    ]
    assert sorted(await lease_ids(boss)) == [("a", 200), ("b", 200)]
    # Independent copies of the template loader: both models serve.
    assert [(await m.run({"x": X}))["y"].shape for m in models] == [(2, 3), (2, 3)]
    await loader.unload_all()
    assert await lease_ids(boss) == [] and loader.models == {}
    assert all(m.state is ManagedModelState.UNLOADED for m in models)


async def test_hf_managed_loader_with_the_tiny_causal_lm(make_boss: BossFactory) -> None:
    boss = make_boss()
    loader = HFManagedLoader(boss)
    model = await loader.load(
        tiny_models.tiny_causal_lm(), model_id="lm", vram_mb=200, gpu=0, device="cpu"
    )
    assert await lease_ids(boss) == [("lm", 200)]
    text = await model.generate("The quick brown", max_tokens=4)
    assert isinstance(text, str) and text
    await loader.unload("lm")
    assert await lease_ids(boss) == []


async def test_diffusers_managed_loader_with_the_tiny_pipeline(make_boss: BossFactory) -> None:
    boss = make_boss()
    loader = DiffusersManagedLoader(boss)
    model = await loader.load(
        tiny_models.tiny_diffusion(), model_id="sd", vram_mb=400, gpu=1, device="cpu"
    )
    assert await lease_ids(boss, gpu=1) == [("sd", 400)]
    image = await model.generate_image("a red cube", steps=1, seed=0, width=32, height=32)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    await loader.unload_all()
    assert await lease_ids(boss, gpu=1) == []
