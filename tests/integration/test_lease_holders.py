"""Real holder processes: SIGKILL (expiry, and pid reaping on this host) and SIGSTOP."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from mlsup.errors import LeaseTimeout
from mlsup.kit.leases import LeaseTiming
from mlsup.testing.redis import TestRedis

from .conftest import BossFactory, spawn_holder

HOLD = """
lease = await boss.acquire(800, "victim", gpu=0)
print("ready", lease.id, flush=True)
await asyncio.sleep(3600)
"""


async def test_sigkilled_holder_on_this_host_is_reaped_at_once(
    make_boss: BossFactory,
    redis_server: TestRedis,
    redis_prefix: str,
    children: list[subprocess.Popen[str]],
) -> None:
    # A 30 s TTL: getting the VRAM well before it proves the dead pid was reaped.
    proc = spawn_holder(children, redis_server.url, redis_prefix, HOLD, ttl=30.0)
    boss = make_boss(timing=LeaseTiming(ttl_s=30.0))
    with pytest.raises(LeaseTimeout):
        await boss.acquire(800, "next", gpu=0, timeout=0.1)  # the live holder is not reaped
    proc.send_signal(signal.SIGKILL)  # not waited for: a zombie counts as dead too
    started = time.monotonic()
    lease = await boss.acquire(800, "next", gpu=0, timeout=20)
    assert time.monotonic() - started < 15, "expected pid reaping, not expiry"
    assert lease.held


async def test_sigkilled_remote_holder_expires_within_ttl_and_a_heartbeat(
    make_boss: BossFactory,
    redis_server: TestRedis,
    redis_prefix: str,
    children: list[subprocess.Popen[str]],
) -> None:
    ttl = 1.0
    # The child claims another host: its pid means nothing here, so only expiry frees it.
    proc = spawn_holder(children, redis_server.url, redis_prefix, HOLD, ttl=ttl, host="elsewhere")
    boss = make_boss()
    await _assert_blocked(boss)
    proc.kill()
    proc.wait()
    await _assert_blocked(boss)  # a dead remote pid is not reaped
    killed = time.monotonic()
    lease = await boss.acquire(800, "next", gpu=0, timeout=10)
    elapsed = time.monotonic() - killed
    print(f"\nremote holder's VRAM free again {elapsed * 1000:.0f} ms after SIGKILL")
    assert elapsed <= ttl + ttl / 5 + 1.0  # TTL + one renewal interval, plus scheduling slack
    assert lease.held


async def _assert_blocked(boss: object) -> None:
    from mlsup.kit.leases import GPUBoss

    assert isinstance(boss, GPUBoss)
    with pytest.raises(LeaseTimeout):
        await boss.acquire(800, "next", gpu=0, timeout=0.05)


STOPPABLE = """
lease = await boss.acquire(800, "sleepy", gpu=0)
print("ready", lease.id, flush=True)
await asyncio.to_thread(sys.stdin.readline)
try:
    await boss.renew(lease)
    print("renewed", flush=True)
except Exception as exc:
    print(type(exc).__name__, lease.lost is exc, flush=True)
await boss.close()
"""


async def test_sigstopped_holder_past_its_ttl_gets_lease_lost(
    make_boss: BossFactory,
    redis_server: TestRedis,
    redis_prefix: str,
    children: list[subprocess.Popen[str]],
) -> None:
    proc = spawn_holder(children, redis_server.url, redis_prefix, STOPPABLE, ttl=0.6)
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        boss = make_boss()
        # The stopped holder cannot renew: its VRAM goes to the next caller after the TTL.
        lease = await boss.acquire(800, "next", gpu=0, timeout=10)
        assert lease.held
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("renew\n")
    proc.stdin.flush()
    assert proc.stdout.readline().split() == ["LeaseLost", "True"]
    assert proc.wait(timeout=10) == 0
