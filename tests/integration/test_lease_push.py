"""Preemption by push (real Redis): the holder hears a request at once, and a lost push still
reaches it through renewal."""

from __future__ import annotations

import asyncio

from mlsup.kit.leases import LeaseTiming, PreemptionRequest, Priority
from mlsup.testing.redis import TestRedis

from .conftest import BossFactory

#: Renewals 20 s apart: a request heard within the test's wait can only have been pushed.
NO_RENEWAL = LeaseTiming(ttl_s=60.0, grace_s=30.0, waiter_ttl_s=2.0)


async def _heard(requests: asyncio.Queue[PreemptionRequest]) -> PreemptionRequest:
    return await asyncio.wait_for(requests.get(), timeout=10)


async def test_a_push_reaches_the_holder_before_any_renewal(make_boss: BossFactory) -> None:
    low_boss = make_boss(timing=NO_RENEWAL)
    high_boss = make_boss(timing=NO_RENEWAL, host="requester-host")
    low = await low_boss.acquire(700, "low", gpu=0, priority=Priority.LOW)
    granted_at = low.renewed_at
    requests: asyncio.Queue[PreemptionRequest] = asyncio.Queue()
    low.on_preempt(requests.put_nowait)
    high = asyncio.ensure_future(
        high_boss.acquire(700, "high", gpu=0, priority=Priority.HIGH, timeout=20)
    )
    request = await _heard(requests)
    assert low.renewed_at == granted_at, "heard through renewal, not by push"
    assert request.lease_id == low.id and request.priority is Priority.HIGH
    assert request.remaining_s > NO_RENEWAL.grace_s / 2  # the deadline is the grace period's
    await low_boss.release(low)  # the holder yields; the requester is woken and granted
    lease = await high
    assert lease.held and lease.id == request.requester
    assert low.lost is None


async def test_a_lost_push_still_preempts_through_renewal(
    make_boss: BossFactory, redis_server: TestRedis
) -> None:
    slow_grace = LeaseTiming(ttl_s=1.0, renew_interval_s=0.1, grace_s=30.0)
    low_boss = make_boss(timing=slow_grace)
    high_boss = make_boss(timing=slow_grace, host="requester-host")
    low = await low_boss.acquire(700, "low", gpu=0, priority=Priority.NORMAL)
    assert low_boss.push is not None
    channel = low_boss.push.channel
    await low_boss.push.stop()  # the subscriber disconnects: whatever is pushed now is lost
    client = redis_server.client()
    try:  # the socket closes on the event loop's next turns
        while client.pubsub_numsub(channel)[0][1] != 0:
            await asyncio.sleep(0.01)
    finally:
        client.close()
    renewed_before = low.renewed_at
    requests: asyncio.Queue[PreemptionRequest] = asyncio.Queue()

    async def yield_now(request: PreemptionRequest) -> None:
        requests.put_nowait(request)
        await low_boss.release(low)

    low.on_preempt(yield_now)
    high = await high_boss.acquire(700, "high", gpu=0, priority=Priority.CRITICAL, timeout=20)
    request = await _heard(requests)
    assert request.lease_id == low.id and request.requester == high.id
    assert low.renewed_at > renewed_before, "the fallback is the renewal check"
    assert high.held and low.released and low.lost is None


async def test_hostile_pushes_are_ignored_and_the_listener_keeps_listening(
    make_boss: BossFactory, redis_server: TestRedis
) -> None:
    low_boss = make_boss(timing=NO_RENEWAL)
    high_boss = make_boss(timing=NO_RENEWAL, host="requester-host")
    low = await low_boss.acquire(700, "low", gpu=0, priority=Priority.LOW)
    requests: asyncio.Queue[PreemptionRequest] = asyncio.Queue()
    low.on_preempt(requests.put_nowait)
    assert low_boss.push is not None
    client = redis_server.client()
    try:
        for junk in ("garbage", f"{low.id}|x|y|z|w", "not-ours|1|2|3|r", "\xff" * 64):
            client.publish(low_boss.push.channel, junk)
    finally:
        client.close()
    high = asyncio.ensure_future(
        high_boss.acquire(700, "high", gpu=0, priority=Priority.HIGH, timeout=20)
    )
    request = await _heard(requests)  # the first request the holder hears is the real one
    assert request.requester != "r" and low_boss.push.listening
    await low_boss.release(low)
    assert (await high).held
    assert requests.empty()  # the junk delivered nothing
