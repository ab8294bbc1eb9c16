"""Hypothesis stateful test of one process's boss against a model of what Redis must hold."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)

from mlsup.errors import CapacityExceeded, LeaseTimeout
from mlsup.kit.leases import GPULease, LeaseTiming, SyncGPUBoss
from mlsup.testing.redis import TestRedis

from .conftest import DEVICES

CAPACITY = {d["index"]: d["memory_mb"] for d in DEVICES}
# Nothing expires and no preemption deadline passes within one example.
STEADY = LeaseTiming(ttl_s=60, grace_s=600, waiter_ttl_s=60)


class LeaseMachine(RuleBasedStateMachine):
    """Random acquire/resize/renew/release; Redis must always match the model exactly."""

    server: TestRedis
    leases = Bundle("leases")

    @initialize()
    def start(self) -> None:
        self.prefix = f"{self.server.prefix()}sm:"
        self.boss = SyncGPUBoss(self.server.url, self.prefix, DEVICES, timing=STEADY)
        self.model: dict[str, GPULease] = {}

    def used(self, gpu: int) -> int:
        return sum(lease.vram_mb for lease in self.model.values() if lease.gpu == gpu)

    @rule(
        target=leases,
        vram=st.integers(1, 900),
        gpu=st.sampled_from([0, 1]),
        prio=st.sampled_from(["low", "normal", "high", "critical"]),
    )
    def acquire(self, vram: int, gpu: int, prio: str) -> GPULease | None:
        fits = self.used(gpu) + vram <= CAPACITY[gpu]
        if vram > CAPACITY[gpu]:
            with pytest.raises(CapacityExceeded):
                self.boss.acquire(vram, "m", prio, gpu, timeout=0)
            return None
        if not fits:
            with pytest.raises(LeaseTimeout):
                self.boss.acquire(vram, "m", prio, gpu, timeout=0)
            return None
        lease = self.boss.acquire(vram, "m", prio, gpu, timeout=0)
        self.model[lease.id] = lease
        return lease

    @rule(lease=consumes(leases))
    def release(self, lease: GPULease | None) -> None:
        if lease is not None:
            self.boss.release(lease)
            self.model.pop(lease.id)

    @rule(lease=leases, vram=st.integers(1, 1000))
    def resize(self, lease: GPULease | None, vram: int) -> None:
        if lease is None:
            return
        if vram > CAPACITY[lease.gpu]:
            with pytest.raises(CapacityExceeded):
                self.boss.resize(lease, vram)
        elif self.used(lease.gpu) - lease.vram_mb + vram > CAPACITY[lease.gpu]:
            with pytest.raises(LeaseTimeout):
                self.boss.resize(lease, vram)
        else:
            self.boss.resize(lease, vram)
            assert lease.vram_mb == vram

    @rule(lease=leases)
    def renew(self, lease: GPULease | None) -> None:
        if lease is not None:
            self.boss.renew(lease)
            assert lease.held

    @invariant()
    def redis_matches_the_model(self) -> None:
        snapshot = self.boss.snapshot()
        for gpu, snap in snapshot.items():
            assert snap.used_mb <= snap.capacity_mb
            assert {x.id for x in snap.leases} == {
                lease.id for lease in self.model.values() if lease.gpu == gpu
            }
            assert snap.used_mb == self.used(gpu)
            assert snap.waiting == ()  # timed-out waiters always left

    def teardown(self) -> None:
        if hasattr(self, "boss"):
            self.boss.close()
            self.server.cleanup(self.prefix)


def test_lease_state_machine(redis_server: TestRedis) -> None:
    LeaseMachine.server = redis_server
    runner = LeaseMachine.TestCase()
    runner.settings = settings(max_examples=25, stateful_step_count=25, deadline=None)
    runner.runTest()
