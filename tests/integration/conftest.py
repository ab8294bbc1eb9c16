"""Fixtures of the integration tests: IPC peers, and bosses on the test Redis under the test's
own prefix."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlsup.ipc.endpoints import ipc_endpoint
from mlsup.ipc.shm import sweep_orphans
from mlsup.kit.leases import GPUBoss, LeaseTiming
from mlsup.testing.redis import TestRedis

from .ipc_helpers import Peer
from .supervisor_helpers import RunningSupervisor

#: Short lease times so tests run in well under a second per scenario.
FAST = LeaseTiming(ttl_s=1.0, renew_interval_s=0.2, grace_s=0.8, waiter_ttl_s=2.0)
DEVICES = [{"index": 0, "memory_mb": 1000}, {"index": 1, "memory_mb": 800}]

BossFactory = Callable[..., GPUBoss]


@pytest.fixture
def start_peer(runtime_dir: Path) -> Iterator[Callable[..., Peer]]:
    peers: list[Peer] = []

    def start(name: str = "peer", interval: float = 5.0) -> Peer:
        peer = Peer(ipc_endpoint(name), interval)
        peers.append(peer)
        return peer

    yield start
    for peer in peers:
        peer.stop()
    sweep_orphans()  # what peers killed by a test left behind


@pytest.fixture
def peer(start_peer: Callable[..., Peer]) -> Peer:
    return start_peer()


@pytest.fixture
async def make_boss(redis_server: TestRedis, redis_prefix: str) -> AsyncIterator[BossFactory]:
    """``make_boss(devices=..., timing=...)``: a boss on this test's prefix, closed afterwards."""
    bosses: list[GPUBoss] = []

    def make(**kwargs: Any) -> GPUBoss:
        kwargs.setdefault("devices", DEVICES)
        kwargs.setdefault("timing", FAST)
        boss = GPUBoss(redis_server.url, redis_prefix, **kwargs)
        bosses.append(boss)
        return boss

    yield make
    for boss in bosses:
        await boss.close()


def redis_state(server: TestRedis, prefix: str, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every key under ``prefix`` with its value, to check that something changed nothing."""
    client = server.client()
    try:
        state: dict[str, Any] = {}
        for raw in client.scan_iter(match=f"{prefix}*"):
            key = raw.decode()
            if any(key.endswith(s) for s in skip):
                continue
            kind = client.type(key).decode()
            if kind == "string":
                state[key] = client.get(key)
            elif kind == "hash":
                state[key] = client.hgetall(key)
            elif kind == "zset":
                state[key] = client.zrange(key, 0, -1, withscores=True)
            elif kind == "set":
                state[key] = client.smembers(key)
            elif kind == "list":
                state[key] = client.lrange(key, 0, -1)
        return state
    finally:
        client.close()


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll ``predicate`` until true or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.01)


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    """Child processes started by a test; killed and reaped afterwards."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


def spawn_holder(
    procs: list[subprocess.Popen[str]],
    url: str,
    prefix: str,
    code: str,
    *,
    ttl: float = 1.0,
    host: str | None = None,
) -> subprocess.Popen[str]:
    """Run ``code`` (an async body with ``boss`` in scope) in a child; it prints ``ready``."""
    program = (
        f"TTL = {ttl!r}\nHOST = {host!r}\n"
        "import asyncio, sys\n"
        "from mlsup.kit.leases import GPUBoss, LeaseTiming\n"
        "async def main():\n"
        f"    boss = GPUBoss({url!r}, {prefix!r}, {DEVICES!r}, timing=LeaseTiming("
        f"ttl_s=TTL, renew_interval_s=TTL / 5, grace_s=0.8), host=HOST)\n"
        + "".join(f"    {line}\n" for line in code.strip().splitlines())
        + "asyncio.run(main())\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", program],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    procs.append(proc)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line.startswith("ready"), f"child failed to start: {line!r}"
    return proc


@pytest.fixture
def supervisors(tmp_path: Path) -> Any:
    """``supervisors(config, name="sup", wait=True)``: a real supervisor, stopped afterwards."""
    started: list[RunningSupervisor] = []

    def start(config: str, name: str = "sup", wait: bool = True) -> RunningSupervisor:
        supervisor = RunningSupervisor(tmp_path, config, name).start(wait=wait)
        started.append(supervisor)
        return supervisor

    yield start
    for supervisor in started:
        if supervisor.process is not None and supervisor.process.poll() is None:
            supervisor.stop()
    sweep_orphans()
