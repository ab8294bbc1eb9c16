"""What the seed's patterns need from the kit: a bare GPUBoss(), models resolved from the
manifest, awaitable model operations, lease reuse inside ``async with boss.acquire``, unloads
that wait for calls in flight, and EmbeddedLLMLoader. Real Redis, real models."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from mlsup.errors import ConfigError, ModelError, ModelNotFound
from mlsup.kit import EmbeddedLLMLoader, GPUBoss, ManagedModelLoader, Priority
from mlsup.kit.devices import cpu_budget_devices
from mlsup.kit.loaders import ModelLoader
from mlsup.kit.managed import ManagedModelState
from mlsup.kit.manifest import CONFIG_ENV
from mlsup.testing.redis import TestRedis
from mlsup.testing.tiny_models import smollm2_gguf

from .conftest import BossFactory

HELLO = [{"role": "user", "content": "Say hello in one word."}]
GEN = {"max_tokens": 8, "temperature": 0.0}


def write_config(directory: Path, redis: TestRedis, prefix: str, devices: bool = True) -> Path:
    config = directory / "mlsup.toml"
    text = f"""
[redis]
url = "{redis.url}"
prefix = "{prefix}"

[models.my-model]
loader = "gguf"
path = "{smollm2_gguf()}"
vram_mb = 700
priority = "high"
options = {{ n_ctx = 512, seed = 0 }}
"""
    if devices:
        text += "\n[[devices]]\nindex = 0\nmemory_mb = 16000\nsimulated = true\n"
    config.write_text(text)
    return config


@pytest.fixture
def config(
    tmp_path: Path, redis_server: TestRedis, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> Path:
    path = write_config(tmp_path, redis_server, redis_prefix)
    monkeypatch.setenv(CONFIG_ENV, str(path))
    monkeypatch.delenv("MLSUP_REDIS_URL", raising=False)
    return path


async def live_leases(boss: GPUBoss) -> list[tuple[str, int]]:
    return [(x.model_id, x.vram_mb) for x in (await boss.snapshot())[0].leases]


async def test_a_bare_boss_takes_redis_prefix_and_devices_from_the_config(
    config: Path, redis_prefix: str
) -> None:
    boss = GPUBoss()
    await boss.connect()
    await boss.connect()  # idempotent, as Pattern 1 calls it after the constructor
    try:
        assert boss.prefix == redis_prefix and boss.capacities == {0: 16000}
        async with boss.acquire(vram_mb=8000, model_id="temp"):
            assert await live_leases(boss) == [("temp", 8000)]
    finally:
        await boss.close()


async def test_without_gpus_or_devices_a_bare_boss_uses_the_supervisors_cpu_rule(
    tmp_path: Path,
    redis_server: TestRedis,
    redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = write_config(tmp_path, redis_server, redis_prefix, devices=False)
    monkeypatch.setenv(CONFIG_ENV, str(path))
    boss = GPUBoss()
    try:
        await boss.connect()
        if boss.capacities != {0: cpu_budget_devices()[0]["memory_mb"]}:
            pytest.skip("this machine has NVIDIA GPUs: NVML gives the devices")
        # A second process agrees: it reads the capacity published by the first.
        other = GPUBoss(redis_server.url, redis_prefix)
        await other.connect()
        assert other.capacities == boss.capacities
        await other.close()
    finally:
        await boss.close()


async def test_pattern1_loads_a_manifest_model_by_id_with_its_settings(config: Path) -> None:
    boss = GPUBoss()
    loader = ManagedModelLoader(boss=boss)
    model = await loader.load(model_id="my-model", vram_mb=8000, priority=Priority.NORMAL)
    try:
        assert model.loaded and model.lease.vram_mb == 8000
        assert model.lease.priority is Priority.NORMAL  # the call's, over the manifest's
        text = await model.chat(HELLO, **GEN)
        assert isinstance(text, str) and text.strip()
        assert await loader.load("my-model") is model
    finally:
        await loader.unload_all()
        await boss.close()


async def test_manifest_defaults_and_every_awaitable_operation(config: Path) -> None:
    boss = GPUBoss()
    loader = ManagedModelLoader(boss=boss)
    model = await loader.load("my-model")
    try:
        assert (model.lease.vram_mb, model.lease.priority) == (700, Priority.HIGH)
        tokens = await model.tokenize("hello")
        assert tokens and all(isinstance(t, int) for t in tokens)
        completion = await model.complete("The sky is", **GEN)
        assert isinstance(completion, str)
        pieces = [piece async for piece in model.chat(HELLO, stream=True, **GEN)]
        assert pieces and all(isinstance(p, str) for p in pieces)
        assert "".join(pieces) == await model.chat(HELLO, **GEN)  # seeded, greedy
        assert model.calls_in_flight == 0
        await model.unload()
        assert model.state is ManagedModelState.UNLOADED and await live_leases(boss) == []
        with pytest.raises(ModelError, match="was unloaded"):
            await model.chat(HELLO)
    finally:
        await loader.unload_all()
        await boss.close()


async def test_an_unknown_id_names_the_manifest(config: Path) -> None:
    boss = GPUBoss()
    loader = ManagedModelLoader(boss=boss)
    try:
        with pytest.raises(ModelNotFound, match=str(config)) as caught:
            await loader.load("no-such-model")
        assert "my-model" in str(caught.value)  # the known ids
        assert await live_leases(boss) == [] and boss.held == []
    finally:
        await boss.close()


async def test_without_a_manifest_the_error_says_what_to_do(
    redis_server: TestRedis, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    boss = GPUBoss(redis_server.url, redis_prefix, [{"index": 0, "memory_mb": 1000}])
    try:
        with pytest.raises(ConfigError, match=CONFIG_ENV):
            await ManagedModelLoader(boss=boss).load("my-model")
    finally:
        await boss.close()


async def test_pattern2_a_load_inside_acquire_uses_that_lease(config: Path) -> None:
    boss = GPUBoss()
    loader = ManagedModelLoader(boss=boss)
    try:
        async with boss.acquire(vram_mb=8000, model_id="temp") as lease:
            model = await loader.load("my-model")
            assert model.lease is lease and not model.owns_lease
            assert boss.held == [lease]
            assert await live_leases(boss) == [("temp", 8000)]  # no second lease
            assert await model.chat(HELLO, **GEN)
            await model.unload()
            assert lease.held and await live_leases(boss) == [("temp", 8000)]
        assert await live_leases(boss) == [] and boss.held == []
        # Outside the block, loads take their own lease again.
        own = await loader.load("my-model")
        assert own.owns_lease and await live_leases(boss) == [("my-model", 700)]
    finally:
        await loader.unload_all()
        await boss.close()


async def test_another_tasks_lease_is_not_borrowed(config: Path) -> None:
    boss = GPUBoss()
    loader = ManagedModelLoader(boss=boss)
    entered, done = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with boss.acquire(vram_mb=8000, model_id="temp"):
            entered.set()
            await done.wait()

    task = asyncio.create_task(holder())
    try:
        await entered.wait()
        model = await loader.load("my-model")
        assert model.owns_lease
        assert sorted(await live_leases(boss)) == [("my-model", 700), ("temp", 8000)]
    finally:
        done.set()
        await task
        await loader.unload_all()
        await boss.close()


class GateModel:
    """A model whose ``run`` blocks until the test opens the gate."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.gate = threading.Event()
        self.running = 0

    def run(self, inputs: dict[str, Any]) -> dict[str, Any]:
        self.running += 1
        self.started.set()
        self.gate.wait(timeout=60)
        self.running -= 1
        return inputs


class GateLoader(ModelLoader):
    """Records how many calls were running when the model was unloaded."""

    name = "gate"

    def __init__(self) -> None:
        super().__init__()
        self.running_at_unload: list[int] = []

    def _estimate_mb(self, path: Path, options: Mapping[str, Any]) -> float:
        return 100.0

    def _load(self, path: Path, options: Mapping[str, Any]) -> GateModel:
        return GateModel()

    def unload(self) -> None:
        if self.model is not None:
            self.running_at_unload.append(self.model.running)
        super().unload()


async def test_unload_waits_for_the_call_in_flight(
    tmp_path: Path, redis_server: TestRedis, redis_prefix: str
) -> None:
    boss = GPUBoss(redis_server.url, redis_prefix, [{"index": 0, "memory_mb": 1000}])
    template = GateLoader()
    loader = ManagedModelLoader(boss, template)
    path = tmp_path / "weights.bin"
    path.write_bytes(b"x")
    model = await loader.load(path, model_id="gate")
    gate_model: GateModel = model.model
    try:
        call = asyncio.create_task(model.run({"x": 1}))
        await asyncio.to_thread(gate_model.started.wait, 60)
        unload = asyncio.create_task(loader.unload("gate"))
        await asyncio.sleep(0)  # let the unload start: it retires the model, then waits
        assert model.state is ManagedModelState.UNLOADED and not unload.done()
        with pytest.raises(ModelError, match="was unloaded"):
            await model.run({"x": 2})  # no new call on a model being unloaded
        assert await live_leases(boss) == [("gate", 100)]  # still held: the call runs
        gate_model.gate.set()
        assert await call == {"x": 1}
        await unload
        assert model.loader.running_at_unload == [0]  # type: ignore[attr-defined]
        assert await live_leases(boss) == []
    finally:
        gate_model.gate.set()
        await loader.unload_all()
        await boss.close()


async def test_embedded_llm_loader_loads_validated_under_the_lease(config: Path) -> None:
    boss = GPUBoss()
    loader = EmbeddedLLMLoader(boss, free_vram=lambda: 24000)
    model = await loader.load("my-model", vram_mb=900)
    try:
        report = model.loader.load_report
        assert report is not None and report.attempts  # the validated ladder ran
        # The plan saw the lease (900 MB), not the GPU's 24000 MB free; a CPU-only build of
        # llama.cpp plans for the CPU whatever it sees.
        assert report.free_mb in (900, None)
        assert await model.chat(HELLO, **GEN)
        assert await live_leases(boss) == [("my-model", 900)]
    finally:
        await loader.unload_all()
        await boss.close()


async def test_preemption_never_frees_weights_under_a_running_call(
    make_boss: BossFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    low_boss, high_boss = make_boss(), make_boss()
    loader = ManagedModelLoader(low_boss, GateLoader())
    path = tmp_path / "weights.bin"
    path.write_bytes(b"x")
    model = await loader.load(path, model_id="low", vram_mb=900, priority=Priority.LOW, gpu=0)
    gate_model: GateModel = model.model
    call = asyncio.create_task(model.run({"x": 1}))
    try:
        await asyncio.to_thread(gate_model.started.wait, 60)
        # HIGH needs the GPU; LOW cannot yield while its call runs, so its grace period runs
        # out, Redis revokes its lease, and HIGH gets the VRAM.
        high = await high_boss.acquire(500, "high", priority=Priority.HIGH, gpu=0, timeout=10)
        assert high.held and model.state is ManagedModelState.PREEMPTED
        assert model.loader.running_at_unload == []  # type: ignore[attr-defined]
        assert "still running" in caplog.text
        gate_model.gate.set()
        assert await call == {"x": 1}  # the call finished on intact weights
        await loader.unload_all()  # waits for the unload the last call left to do
        assert model.loader.running_at_unload == [0]  # type: ignore[attr-defined]
    finally:
        gate_model.gate.set()
        await asyncio.gather(call, return_exceptions=True)
        await loader.unload_all()
