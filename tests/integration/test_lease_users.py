"""A lease's users (the worker processes that use its VRAM), with real processes: a lease
whose owner died is reaped only once its users are gone too."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mlsup.errors import LeaseNotHeld, LeaseTimeout
from mlsup.kit.leases import GPUBoss, LeaseTiming
from mlsup.kit.leases.owner import HolderIdentity, encode_users
from mlsup.process_identity import ProcessIdentity
from mlsup.supervisor.recovery import LeaseRecord, PreviousState, WorkerRecord, release_previous
from mlsup.testing.redis import TestRedis

from .conftest import BossFactory, spawn_holder

#: Long enough that only reaping (never expiry) can free a lease within a test.
SLOW = LeaseTiming(ttl_s=30.0)

# The holder plays a supervisor: it leases, records the worker the test started as the
# lease's user, then dies holding the lease (no release, no cleanup).
OWNER_DIES = """
import os
from mlsup.process_identity import ProcessIdentity
lease = await boss.acquire(800, "victim", gpu=0)
print("ready", lease.id, flush=True)
pid = int(await asyncio.to_thread(sys.stdin.readline))
await boss.set_users(lease, [ProcessIdentity.of(pid)])
print("users", flush=True)
os._exit(0)
"""


def start_worker(children: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    """A process standing for a worker (it only has to run)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"], text=True)
    children.append(proc)
    return proc


async def lease_ids(boss: GPUBoss) -> set[str]:
    return {lease.id for lease in (await boss.snapshot())[0].leases}


async def test_a_dead_owners_lease_lives_while_its_user_runs_and_is_reaped_after(
    make_boss: BossFactory,
    redis_server: TestRedis,
    redis_prefix: str,
    children: list[subprocess.Popen[str]],
) -> None:
    worker = start_worker(children)
    owner = spawn_holder(children, redis_server.url, redis_prefix, OWNER_DIES, ttl=30.0)
    assert owner.stdin is not None and owner.stdout is not None
    owner.stdin.write(f"{worker.pid}\n")
    owner.stdin.flush()
    assert owner.stdout.readline().strip() == "users"
    assert owner.wait(timeout=10) == 0  # the owner is dead (and reaped)
    boss = make_boss(timing=SLOW)
    held = await lease_ids(boss)
    assert len(held) == 1, "another boss's snapshot must not reap a lease whose user runs"
    with pytest.raises(LeaseTimeout):  # nor must admission, when it needs the space
        await boss.acquire(800, "next", gpu=0, timeout=0.2)
    assert await lease_ids(boss) == held
    worker.kill()
    worker.wait()
    assert await lease_ids(boss) == set(), "owner and user dead: reaped at once"
    lease = await boss.acquire(800, "next", gpu=0, timeout=5)
    assert lease.held


async def test_reap_is_compare_and_delete_on_the_users_too(make_boss: BossFactory) -> None:
    boss = make_boss(timing=SLOW)
    lease = await boss.acquire(100, "m", gpu=0)
    me = ProcessIdentity.current()
    await boss.set_users(lease, [me])
    assert lease.users == (me,)
    owner = boss.owner
    # A caller that looked before the user was attached: its reap must not delete the lease.
    stale = HolderIdentity(lease.id, owner.pid, owner.start, "")
    assert not await boss.store.reap(stale)
    assert lease.id in await lease_ids(boss)
    current = HolderIdentity(lease.id, owner.pid, owner.start, encode_users([me]))
    assert await boss.store.reap(current)
    assert lease.id not in await lease_ids(boss)


async def test_users_of_a_released_lease_cannot_be_set(make_boss: BossFactory) -> None:
    boss = make_boss()
    lease = await boss.acquire(100, "m", gpu=0)
    await boss.release(lease)
    with pytest.raises(LeaseNotHeld):
        await boss.set_users(lease, [ProcessIdentity.current()])


async def test_a_successor_releases_a_dead_supervisors_lease_only_after_its_worker_ended(
    make_boss: BossFactory, children: list[subprocess.Popen[str]]
) -> None:
    worker = start_worker(children)
    token = ProcessIdentity.of(worker.pid)
    assert token is not None
    dead = make_boss(timing=SLOW)
    lease = await dead.acquire(800, "m", gpu=0)
    records = [LeaseRecord.of(lease)]
    workers = [WorkerRecord("m", worker.pid, token.token)]
    successor = make_boss(timing=SLOW)
    lines = await release_previous(successor, PreviousState(workers, records))
    assert lease.id in await lease_ids(successor), lines
    assert "still runs" in " ".join(lines)
    worker.kill()
    worker.wait()
    lines = await release_previous(successor, PreviousState(workers, records))
    assert lease.id not in await lease_ids(successor), lines
