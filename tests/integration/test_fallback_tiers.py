"""A FallbackChain of real tiers: SmolLM2 under leases on the real Redis, then rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlsup.errors import CapacityExceeded, LeaseTimeout
from mlsup.kit import GGUFModelLoader, GPUBoss, ManagedModelLoader
from mlsup.service import FallbackChain
from mlsup.testing.redis import TestRedis
from mlsup.testing.tiny_models import smollm2_gguf

HELLO = [{"role": "user", "content": "Say hello in one word."}]


@pytest.fixture
async def boss(redis_server: TestRedis, redis_prefix: str) -> GPUBoss:
    boss = GPUBoss(redis_server.url, redis_prefix, [{"index": 0, "memory_mb": 1000}])
    await boss.connect()
    yield boss  # type: ignore[misc]
    await boss.close()


def chain_for(loader: ManagedModelLoader, path: Path) -> FallbackChain[str]:
    async def tier(model_id: str, vram_mb: int) -> str:
        model = await loader.load(path, model_id=model_id, vram_mb=vram_mb, timeout=0.2)
        return str(await model.chat(HELLO, max_tokens=8, temperature=0.0))

    return FallbackChain(
        [
            ("huge", lambda: tier("huge", 4000)),  # larger than the GPU: never fits
            ("large", lambda: tier("large", 800)),
            ("small", lambda: tier("small", 150)),
            ("rules", lambda: "Hello."),
        ],
        name="conversation",
    )


async def test_the_small_model_serves_while_the_large_one_cannot_get_a_lease(
    boss: GPUBoss,
) -> None:
    loader = ManagedModelLoader(boss, GGUFModelLoader())
    blocker = await boss.acquire(700, "someone-else", gpu=0)
    try:
        result = await chain_for(loader, smollm2_gguf()).run()
        assert result.tier == "small" and result.value.strip()
        assert [(f.tier, type(f.error)) for f in result.skipped] == [
            ("huge", CapacityExceeded),
            ("large", LeaseTimeout),
        ]
        assert list(loader.models) == ["small"]
    finally:
        await loader.unload_all()
        await boss.release(blocker)


async def test_rules_answer_when_the_gpu_is_full(boss: GPUBoss) -> None:
    loader = ManagedModelLoader(boss, GGUFModelLoader())
    blocker = await boss.acquire(1000, "someone-else", gpu=0)
    try:
        result = await chain_for(loader, smollm2_gguf()).run()
        assert (result.tier, result.value) == ("rules", "Hello.")
        assert [f.tier for f in result.skipped] == ["huge", "large", "small"]
        assert loader.models == {}  # no tier left a model or a lease behind
        assert boss.held == [blocker]
    finally:
        await boss.release(blocker)
