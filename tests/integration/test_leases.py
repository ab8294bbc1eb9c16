"""Lease semantics against a real Redis: grants, fairness, wake-ups, preemption, bad input."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from mlsup.errors import (
    CapacityExceeded,
    DeviceError,
    InvalidArgument,
    LeaseError,
    LeaseLost,
    LeaseNotHeld,
    LeaseTimeout,
)
from mlsup.kit.leases import GPULease, LeaseTiming, PreemptionRequest, Priority, SyncGPUBoss
from mlsup.kit.leases.keys import LeaseKeys
from mlsup.testing.redis import TestRedis

from .conftest import DEVICES, FAST, BossFactory, redis_state


async def test_grant_is_visible_under_the_architecture_keys(
    make_boss: BossFactory, redis_server: TestRedis, redis_prefix: str
) -> None:
    boss = make_boss()
    async with boss.acquire(300, "m", gpu=0) as lease:
        keys = LeaseKeys(redis_prefix)
        client = redis_server.client()
        members = [m.decode() for m in client.zrange(keys.leases(0), 0, -1)]
        fields = {k.decode(): v.decode() for k, v in client.hgetall(keys.lease(lease.id)).items()}
        assert members == [lease.id]
        assert fields["vram_mb"] == "300" and fields["model_id"] == "m"
        assert int(fields["pid"]) == boss.owner.pid and fields["host"] == boss.owner.host
        assert int(fields["epoch"]) == lease.epoch and client.exists(keys.heartbeat(lease.id))
        assert client.get(keys.capacity(0)) == b"1000"
        client.close()
    assert lease.released and not lease.held
    snap = await boss.snapshot()
    assert snap[0].leases == () and snap[0].free_mb == 1000


async def test_epochs_increase_with_every_grant(make_boss: BossFactory) -> None:
    boss = make_boss()
    first = await boss.acquire(100, "a", gpu=0)
    second = await boss.acquire(100, "b", gpu=0)
    assert second.epoch > first.epoch


async def test_snapshot_lists_holders_with_their_context(make_boss: BossFactory) -> None:
    boss = make_boss()
    await boss.acquire(400, "big", priority=Priority.HIGH, gpu=1)
    snap = await boss.snapshot()
    (info,) = snap[1].leases
    assert (info.model_id, info.vram_mb, info.priority) == ("big", 400, Priority.HIGH)
    assert info.pid == boss.owner.pid and info.age_s >= 0 and 0 < info.expires_in_s <= 1.0
    assert snap[1].free_mb == 400 and snap[0].used_mb == 0


async def test_best_fit_picks_the_tightest_gpu(make_boss: BossFactory) -> None:
    boss = make_boss()
    assert (await boss.acquire(700, "a")).gpu == 1  # leaves 100 on GPU 1, not 300 on GPU 0
    assert (await boss.acquire(900, "b")).gpu == 0


async def test_lease_is_renewed_in_the_background(make_boss: BossFactory) -> None:
    boss = make_boss()
    lease = await boss.acquire(100, "m", gpu=0)
    await asyncio.sleep(FAST.ttl_s * 2.5)  # several TTLs: only renewal keeps it alive
    assert lease.lost is None
    await boss.renew(lease)
    assert (await boss.snapshot())[0].used_mb == 100


async def test_waiters_are_served_fifo_and_never_overtaken(make_boss: BossFactory) -> None:
    holder_boss, boss = make_boss(), make_boss()
    holder = await holder_boss.acquire(500, "holder", gpu=0)
    grants: list[str] = []

    async def wait(name: str, mb: int) -> GPULease:
        lease = await boss.acquire(mb, name, gpu=0, timeout=10)
        grants.append(name)
        return lease

    first = asyncio.create_task(wait("first", 800))
    await _until_queued(boss, 1)
    second = asyncio.create_task(wait("second", 100))
    await _until_queued(boss, 2)
    # 100 MB would fit now, but a later request never overtakes an earlier one.
    with pytest.raises(LeaseTimeout):
        await boss.acquire(100, "late", gpu=0, timeout=0.1)
    assert grants == []
    await holder_boss.release(holder)
    await asyncio.gather(first, second)
    assert grants == ["first", "second"]
    assert first.result().epoch < second.result().epoch


async def test_higher_priority_waiters_go_first(make_boss: BossFactory) -> None:
    holder_boss, boss = make_boss(), make_boss()
    holder = await holder_boss.acquire(1000, "holder", gpu=0, priority=Priority.CRITICAL)
    low = asyncio.ensure_future(boss.acquire(600, "low", gpu=0, priority="low", timeout=10))
    await _until_queued(boss, 1)
    high = asyncio.ensure_future(boss.acquire(600, "high", gpu=0, priority="high", timeout=10))
    await _until_queued(boss, 2)
    snap = await boss.snapshot()
    assert [w[2] for w in snap[0].waiting] == [Priority.HIGH, Priority.LOW]
    await holder_boss.release(holder)
    granted = await high
    assert not low.done()
    await boss.release(granted)
    await low


async def test_a_waiter_is_woken_on_release(make_boss: BossFactory) -> None:
    # Long TTL and waiter TTL: nothing but the release's wake-up can end the wait in time.
    slow = LeaseTiming(ttl_s=60, waiter_ttl_s=120)
    holder_boss, boss = make_boss(timing=slow), make_boss(timing=slow)
    holder = await holder_boss.acquire(1000, "holder", gpu=0)
    waiter = asyncio.ensure_future(boss.acquire(1000, "waiter", gpu=0, timeout=20))
    await _until_queued(boss, 1)
    released = time.perf_counter()
    await holder_boss.release(holder)
    await waiter
    latency_ms = (time.perf_counter() - released) * 1000
    print(f"\nwake-up latency after release: {latency_ms:.2f} ms")


async def test_preemption_callback_then_revocation(make_boss: BossFactory) -> None:
    low_boss, high_boss = make_boss(), make_boss()
    low = await low_boss.acquire(700, "low", gpu=0, priority=Priority.LOW)
    requests: list[PreemptionRequest] = []
    low.on_preempt(requests.append)
    started = time.monotonic()
    high = await high_boss.acquire(700, "high", gpu=0, priority=Priority.HIGH, timeout=10)
    # The holder never yielded: its lease was revoked at the deadline, then the waiter got in.
    (request,) = requests
    assert request.lease_id == low.id and request.priority is Priority.HIGH
    assert request.requester == high.id
    assert started < request.deadline <= started + FAST.grace_s + 0.5
    with pytest.raises(LeaseLost, match="revoked"):
        await low_boss.renew(low)
    assert isinstance(low.lost, LeaseLost) and low not in low_boss.held
    await low_boss.release(low)  # releasing a lost lease is a no-op


async def test_a_cooperative_holder_yields_before_the_deadline(make_boss: BossFactory) -> None:
    slow_grace = LeaseTiming(ttl_s=1.0, renew_interval_s=0.1, grace_s=30.0)
    low_boss, high_boss = make_boss(timing=slow_grace), make_boss(timing=slow_grace)
    low = await low_boss.acquire(700, "low", gpu=0, priority=Priority.NORMAL)

    async def yield_now(request: PreemptionRequest) -> None:
        await low_boss.release(low)

    low.on_preempt(yield_now)
    high = await high_boss.acquire(700, "high", gpu=0, priority=Priority.CRITICAL, timeout=10)
    assert high.held and low.released and low.lost is None  # yielded, not revoked


async def test_equal_priorities_never_preempt(make_boss: BossFactory) -> None:
    a, b = make_boss(), make_boss()
    held = await a.acquire(700, "a", gpu=0, priority="high")
    called: list[PreemptionRequest] = []
    held.on_preempt(called.append)
    with pytest.raises(LeaseTimeout):
        await b.acquire(700, "b", gpu=0, priority="high", timeout=0.5)
    await a.renew(held)
    assert called == [] and held.preemption is None
    assert (await a.snapshot())[0].waiting == ()  # the timed-out waiter left the queue


async def test_resize_shrinks_freely_and_grows_only_into_free_space(
    make_boss: BossFactory,
) -> None:
    boss = make_boss()
    lease = await boss.acquire(600, "m", gpu=0)
    other = await boss.acquire(300, "n", gpu=0)
    await boss.resize(lease, 700)
    assert lease.vram_mb == 700 and (await boss.snapshot())[0].used_mb == 1000
    with pytest.raises(LeaseTimeout, match="cannot grow"):
        await boss.resize(lease, 701)
    await boss.resize(lease, 100)
    await boss.release(other)
    assert (await boss.snapshot())[0].used_mb == 100


async def test_sync_facade(redis_server: TestRedis, redis_prefix: str) -> None:
    def body() -> None:
        with SyncGPUBoss(redis_server.url, redis_prefix, DEVICES, timing=FAST) as boss:
            with boss.leased(500, "sync", gpu=1) as lease:
                assert lease.held and boss.snapshot()[1].used_mb == 500
                boss.renew(lease)
                boss.resize(lease, 400)
            assert lease.released and boss.snapshot()[1].used_mb == 0
            kept = boss.acquire(100, "kept", gpu=0)
        assert kept.released  # close() releases what is still held

    await asyncio.to_thread(body)


# --- bad input: a clear error, and nothing changes in Redis ------------------------------


@pytest.mark.parametrize("vram", [0, -5, 1.5, True])
async def test_bad_sizes_are_invalid_arguments(
    make_boss: BossFactory, redis_server: TestRedis, redis_prefix: str, vram: object
) -> None:
    boss = make_boss(timing=LeaseTiming(ttl_s=60))
    held = await boss.acquire(100, "m", gpu=0)
    before = redis_state(redis_server, redis_prefix)
    with pytest.raises(InvalidArgument, match="positive integer"):
        await boss.acquire(vram, "m", gpu=0)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="positive integer"):
        await boss.resize(held, vram)  # type: ignore[arg-type]
    assert redis_state(redis_server, redis_prefix) == before


async def test_too_big_unknown_gpu_and_forged_leases_change_nothing(
    make_boss: BossFactory, redis_server: TestRedis, redis_prefix: str
) -> None:
    boss = make_boss(timing=LeaseTiming(ttl_s=60))
    held = await boss.acquire(100, "m", gpu=0)
    before = redis_state(redis_server, redis_prefix)
    with pytest.raises(CapacityExceeded, match="exceeds the capacity of GPU 1") as exc:
        await boss.acquire(801, "huge", gpu=1)
    assert exc.value.context["model"] == "huge"
    with pytest.raises(CapacityExceeded, match="every GPU"):
        await boss.acquire(1001, "huge")
    with pytest.raises(CapacityExceeded):
        await boss.resize(held, 1001)
    with pytest.raises(DeviceError, match=r"unknown GPU 7 .*known GPUs: 0, 1"):
        await boss.acquire(10, "m", gpu=7)
    forged = GPULease(
        id=held.id,
        token="forged",
        gpu=0,
        vram_mb=100,
        priority=Priority.NORMAL,
        model_id="m",
        epoch=0,
    )
    unknown = GPULease(
        id="nosuchlease",
        token="x",
        gpu=0,
        vram_mb=1,
        priority=Priority.LOW,
        model_id="m",
        epoch=0,
    )
    for lease in (forged, unknown):
        with pytest.raises(LeaseNotHeld, match="never held"):
            await boss.release(lease)
        with pytest.raises(LeaseNotHeld):
            await boss.renew(lease)
        with pytest.raises(LeaseNotHeld):
            await boss.resize(lease, 10)
    assert redis_state(redis_server, redis_prefix) == before
    assert held.held


async def test_timeout_leaves_the_queue(
    make_boss: BossFactory, redis_server: TestRedis, redis_prefix: str
) -> None:
    boss = make_boss(timing=LeaseTiming(ttl_s=60))
    await boss.acquire(900, "m", gpu=0)
    before = redis_state(redis_server, redis_prefix)
    with pytest.raises(LeaseTimeout, match=r"within 0\.2 s") as exc:
        await boss.acquire(200, "late", gpu=0, timeout=0.2)
    assert exc.value.context["gpu"] == 0
    # Only the queue's arrival counter moved on (it is never reused).
    after = redis_state(redis_server, redis_prefix, skip=(":seq",))
    assert after == {k: v for k, v in before.items() if not k.endswith(":seq")}


async def test_releasing_twice_is_harmless(make_boss: BossFactory) -> None:
    boss = make_boss()
    lease = await boss.acquire(10, "m", gpu=0)
    await boss.release(lease)
    await boss.release(lease)
    with pytest.raises(LeaseNotHeld):
        await boss.renew(lease)


async def _until_queued(boss: object, count: int, gpu: int = 0) -> None:
    from mlsup.kit.leases import GPUBoss

    assert isinstance(boss, GPUBoss)
    deadline = time.monotonic() + 10
    while len((await boss.snapshot())[gpu].waiting) < count:
        assert time.monotonic() < deadline, f"never saw {count} waiters"
        await asyncio.sleep(0.01)


async def test_a_key_of_another_type_under_the_prefix_is_a_lease_error(
    make_boss: BossFactory, redis_server: TestRedis, redis_prefix: str
) -> None:
    boss = make_boss()
    await boss.connect()
    raw = redis_server.client()
    try:
        raw.set(f"{redis_prefix}gpu:0:leases", "not a sorted set")
    finally:
        raw.close()
    with pytest.raises(LeaseError, match=r"Redis refused admission.*used by something else"):
        await boss.acquire(100, "m", gpu=0)


async def test_cancelled_script_calls_leave_the_held_connection_in_step(
    make_boss: BossFactory,
) -> None:
    # Scripts share one held connection: a call cancelled mid-exchange must not leave its
    # reply to be read as the next call's.
    boss = make_boss()
    await boss.connect()
    for k in range(40):
        task = asyncio.ensure_future(boss.acquire(100, "m", gpu=0))
        for _ in range(k % 8):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await boss.release(await task)
        snapshot = await boss.snapshot_gpu(0)
        assert snapshot.capacity_mb == 1000
        lease = await boss.acquire(100, "m", gpu=0)
        assert lease.held
        await boss.release(lease)
