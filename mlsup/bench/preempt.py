"""The leases suite's preemption rows: a higher-priority request until its lease is granted,
against the victim's own drain time.

The victim yields as a user's holder would: its ``on_preempt`` callback drains (a fixed
:data:`DRAIN_S` of work standing in for an unload), then releases. Granted minus drain is what
the lease layer adds: hearing the request, the release, and the requester's wake-up. The same
trials with the victim's push subscription closed show the renewal fallback (the old path).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass

from mlsup.bench.rows import Row
from mlsup.kit.leases import GPUBoss, GPULease, LeaseTiming, PreemptionRequest, Priority

__all__ = ["PreemptTrials", "preempt_rows", "preempt_trials"]

#: The victim's simulated drain (seconds): what unloading a small model takes.
DRAIN_S = 0.02
#: The target's allowance over the victim's drain (ms).
ALLOWANCE_MS = 50.0
#: Production timing (renewal every TTL/3) with no settle window (the bench's Redis may be new).
TIMING = LeaseTiming(settle_s=0.0)
DEVICES = [{"index": 0, "memory_mb": 1000}]


@dataclass(frozen=True)
class PreemptTrials:
    """Per trial (ms): request -> granted, request -> victim heard it, the victim's drain."""

    granted: list[float]
    heard: list[float]
    drain: list[float]


async def preempt_trials(url: str, prefix: str, trials: int, *, push: bool) -> PreemptTrials:
    """Run ``trials`` preemptions; ``push=False`` closes the victim's push subscription."""
    granted, heard, drain = [], [], []
    async with (
        GPUBoss(url, prefix, DEVICES, timing=TIMING) as victim,
        GPUBoss(url, prefix, DEVICES, timing=TIMING, host="bench-requester") as requester,
    ):
        if not push and victim.push is not None:
            await victim.push.stop()
        for _ in range(trials):
            lease = await victim.acquire(1000, "victim", gpu=0, priority=Priority.LOW)
            asked = [0.0]  # set just before the request; read when the victim hears it

            async def yield_now(
                request: PreemptionRequest, lease: GPULease = lease, asked: list[float] = asked
            ) -> None:
                heard.append((time.perf_counter() - asked[0]) * 1000)
                began = time.perf_counter()
                await asyncio.sleep(DRAIN_S)
                await victim.release(lease)
                drain.append((time.perf_counter() - began) * 1000)

            lease.on_preempt(yield_now)
            asked[0] = time.perf_counter()
            won = await requester.acquire(1000, "requester", gpu=0, priority="high", timeout=60)
            granted.append((time.perf_counter() - asked[0]) * 1000)
            await requester.release(won)
    return PreemptTrials(granted, heard, drain)


def preempt_rows(suite: str, pushed: PreemptTrials, renewal: PreemptTrials) -> list[Row]:
    """The rows: granted vs drain + allowance (push), the renewal fallback, heard by push."""
    granted = statistics.median(pushed.granted)
    drain = statistics.median(pushed.drain)
    met = granted <= drain + ALLOWANCE_MS
    return [
        Row(
            suite,
            "preemption: request -> granted (median)",
            "ms",
            granted,
            baseline="the victim's own drain",
            baseline_value=drain,
            target=f"<= drain + {ALLOWANCE_MS:g} ms",
            met=met,
            note=None
            if met
            else (
                f"measured in this run: the victim heard the request "
                f"{statistics.median(pushed.heard):.1f} ms after it was made; "
                f"drain {drain:.1f} ms"
            ),
            samples=tuple(v / 1000 for v in pushed.granted),
        ),
        Row(
            suite,
            "preemption: request -> victim hears it, by push (median)",
            "ms",
            statistics.median(pushed.heard),
        ),
        Row(
            suite,
            "preemption: request -> granted, push lost (renewal fallback, median)",
            "ms",
            statistics.median(renewal.granted),
            baseline="the victim's own drain",
            baseline_value=statistics.median(renewal.drain),
        ),
    ]
