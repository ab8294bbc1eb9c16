"""After a managed model is preempted, the same boss leases and loads again.

Regression guard for a report (by the queues helper) that the next ``acquire`` on the boss of a
preempted managed model blocked the event loop. Every variant below runs under a hard pytest
timeout and asyncio deadlines, and a heartbeat task proves the loop kept turning, so a
regression fails instead of hanging the suite. Real Redis (per-test prefix), real probe models.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mlsup.kit.leases import GPUBoss, GPULease, PreemptionRequest, Priority
from mlsup.kit.managed import ManagedModel, ManagedModelLoader, ManagedModelState
from mlsup.testing.loaders import ProbeLoader

from .conftest import BossFactory

#: Asyncio-level bound on each step (the hard pytest timeout is the last resort).
STEP_S = 20.0
pytestmark = pytest.mark.timeout(90)


class Heartbeat:
    """Counts turns of the event loop: a blocked loop stops counting."""

    def __init__(self) -> None:
        self.beats = 0

    async def run(self) -> None:
        while True:
            self.beats += 1
            await asyncio.sleep(0.01)

    async def passes(self, count: int = 3) -> None:
        """Return once the loop has turned ``count`` more times."""
        target = self.beats + count
        while self.beats < target:
            await asyncio.sleep(0.01)


@pytest.fixture
async def heartbeat() -> AsyncIterator[Heartbeat]:
    beat = Heartbeat()
    task = asyncio.ensure_future(beat.run())
    yield beat
    task.cancel()


@pytest.fixture
def probe_path(tmp_path: Path) -> Path:
    path = tmp_path / "probe.txt"
    path.write_text("probe\n")
    return path


async def load_low(loader: ManagedModelLoader, path: Path) -> ManagedModel:
    """The LOW 900 MB model on GPU 0 (1000 MB): a HIGH 500 MB request preempts it."""
    return await asyncio.wait_for(
        loader.load(path, model_id="low", vram_mb=900, priority=Priority.LOW, gpu=0), STEP_S
    )


async def preempt(high_boss: GPUBoss) -> GPULease:
    return await asyncio.wait_for(
        high_boss.acquire(500, "high", priority=Priority.HIGH, gpu=0, timeout=10), STEP_S
    )


async def reacquire_and_reload(
    boss: GPUBoss, loader: ManagedModelLoader, path: Path, heartbeat: Heartbeat
) -> None:
    """What hung in the report: a plain acquire on the first boss, then a reload that serves."""
    before = heartbeat.beats
    lease = await asyncio.wait_for(boss.acquire(900, "again", Priority.LOW, 0, 10), STEP_S)
    assert lease.held
    await boss.release(lease)
    model = await load_low(loader, path)
    assert model.state is ManagedModelState.LOADED
    assert await asyncio.wait_for(model.run({"n": 1}), STEP_S) == {"n": 1}
    await heartbeat.passes()
    assert heartbeat.beats > before
    await asyncio.wait_for(loader.unload_all(), STEP_S)
    assert boss.held == []


async def test_acquire_after_preemption(
    make_boss: BossFactory, probe_path: Path, heartbeat: Heartbeat
) -> None:
    boss, high_boss = make_boss(), make_boss()
    loader = ManagedModelLoader(boss, ProbeLoader())
    low = await load_low(loader, probe_path)
    high = await preempt(high_boss)
    assert low.state is ManagedModelState.PREEMPTED and low.lease.released
    await high_boss.release(high)
    await reacquire_and_reload(boss, loader, probe_path, heartbeat)


async def test_acquire_after_preempting_a_model_with_a_call_in_flight(
    make_boss: BossFactory, probe_path: Path, heartbeat: Heartbeat
) -> None:
    boss, high_boss = make_boss(), make_boss()
    loader = ManagedModelLoader(boss, ProbeLoader())
    low = await load_low(loader, probe_path)
    call = asyncio.ensure_future(low.run({"sleep": 1.5}))
    while low.calls_in_flight == 0:
        await asyncio.sleep(0.01)
    # The call outlives the grace period: the lease is revoked at the deadline, and the
    # weights are freed once the call returns.
    high = await preempt(high_boss)
    assert low.state is ManagedModelState.PREEMPTED
    await high_boss.release(high)
    await reacquire_and_reload(boss, loader, probe_path, heartbeat)
    assert await asyncio.wait_for(call, STEP_S) == {"sleep": 1.5}  # the call was let finish


async def test_a_reload_asked_while_the_preemptor_holds_the_gpu_waits_for_it(
    make_boss: BossFactory, probe_path: Path, heartbeat: Heartbeat
) -> None:
    boss, high_boss = make_boss(), make_boss()
    loader = ManagedModelLoader(boss, ProbeLoader())
    await load_low(loader, probe_path)
    high = await preempt(high_boss)
    reload = asyncio.ensure_future(load_low(loader, probe_path))
    await heartbeat.passes(10)  # the reload queues for VRAM; the loop keeps turning
    assert not reload.done()
    await high_boss.release(high)
    model = await reload
    assert model.state is ManagedModelState.LOADED
    await asyncio.wait_for(loader.unload_all(), STEP_S)
    await reacquire_and_reload(boss, loader, probe_path, heartbeat)


async def test_acquire_after_preemption_inside_an_acquire_block(
    make_boss: BossFactory, probe_path: Path, heartbeat: Heartbeat
) -> None:
    boss, high_boss = make_boss(), make_boss()
    loader = ManagedModelLoader(boss, ProbeLoader())
    async with boss.acquire(900, "low", Priority.LOW, 0) as scope:
        low = await asyncio.wait_for(loader.load(probe_path, model_id="low"), STEP_S)
        assert low.lease is scope
        high = await preempt(high_boss)
        # Yielding gives the block's lease back too; leaving the block then does nothing.
        assert low.state is ManagedModelState.PREEMPTED and scope.released
        await high_boss.release(high)
    await reacquire_and_reload(boss, loader, probe_path, heartbeat)


async def test_a_preemption_callback_can_acquire_on_the_same_boss(
    make_boss: BossFactory, probe_path: Path, heartbeat: Heartbeat
) -> None:
    boss, high_boss = make_boss(), make_boss()
    loader = ManagedModelLoader(boss, ProbeLoader())
    low = await load_low(loader, probe_path)
    again: asyncio.Future[GPULease] = asyncio.get_running_loop().create_future()

    async def take_it_back(request: PreemptionRequest) -> None:
        # Runs in the PreemptionManager's task group, next to the managed loader's unload.
        again.set_result(await boss.acquire(900, "again", Priority.LOW, 0, 10))

    low.lease.on_preempt(take_it_back)
    high = await preempt(high_boss)
    assert low.state is ManagedModelState.PREEMPTED and not again.done()
    await high_boss.release(high)
    lease = await asyncio.wait_for(again, STEP_S)
    assert lease.held
    await boss.release(lease)
    await reacquire_and_reload(boss, loader, probe_path, heartbeat)
