"""The embedded Redis: started in the runtime dir, published, found, stopped."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from mlsup.errors import ConfigError
from mlsup.kit.embedded_redis import EmbeddedRedis
from mlsup.kit.leases import GPUBoss, LeaseTiming


async def test_embedded_redis_is_private_published_and_used_by_default(
    runtime_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLSUP_REDIS_URL", raising=False)
    with EmbeddedRedis() as url:
        published = runtime_dir / "redis.url"
        assert published.read_text().strip() == url and url.startswith("unix://")
        assert stat.S_IMODE(published.stat().st_mode) == 0o600
        assert stat.S_IMODE(runtime_dir.stat().st_mode) == 0o700
        assert Path(url.removeprefix("unix://")).parent == runtime_dir
        # No URL: the boss finds the published one. A fresh Redis admits after a settle
        # window of one TTL (see the restart tests), so keep the TTL short.
        boss = GPUBoss(devices=[{"index": 0, "memory_mb": 100}], timing=LeaseTiming(ttl_s=1.0))
        async with boss.acquire(60, "m") as lease:
            assert lease.held and (await boss.snapshot())[0].used_mb == 60
        await boss.close()
    assert not published.exists()
    with pytest.raises(ConfigError, match="mlsup start"):
        await GPUBoss().connect()


def test_stop_is_idempotent(runtime_dir: Path) -> None:
    server = EmbeddedRedis(runtime_dir)
    url = server.start()
    assert server.start() == url
    server.stop()
    server.stop()
    assert not (runtime_dir / "redis.url").exists()
