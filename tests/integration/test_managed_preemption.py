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

from mlsup.kit.leases import GPULease, PreemptionRequest, Priority
from mlsup.kit.managed import ManagedModel, ManagedModelLoader, ManagedModelState
from mlsup.testing.loaders import ProbeLoader

from .conftest import BossFactory

#: Asyncio-level bound on each step (the hard pytest timeout is the last resort).
STEP_S = 20.0
pytestmark = pytest.mark.timeout(90)


class Scene:
    """A LOW 900 MB managed model on GPU 0 (1000 MB) of ``boss``; ``high_boss`` (another
    process, as far as leases go) preempts it with HIGH 500 MB. A heartbeat task counts turns
    of the event loop: a blocked loop stops counting."""

    def __init__(self, make_boss: BossFactory, path: Path) -> None:
        self.boss, self.high_boss = make_boss(), make_boss()
        self.loader = ManagedModelLoader(self.boss, ProbeLoader())
        self.path = path
        self.beats = 0

    async def beat(self) -> None:
        while True:
            self.beats += 1
            await asyncio.sleep(0.01)

    async def turns(self, count: int = 3) -> None:
        """Return once the loop has turned ``count`` more times."""
        target = self.beats + count
        while self.beats < target:
            await asyncio.sleep(0.01)

    async def load_low(self) -> ManagedModel:
        load = self.loader.load(
            self.path, model_id="low", vram_mb=900, priority=Priority.LOW, gpu=0
        )
        return await asyncio.wait_for(load, STEP_S)

    async def preempt(self) -> GPULease:
        acquire = self.high_boss.acquire(500, "high", priority=Priority.HIGH, gpu=0, timeout=10)
        return await asyncio.wait_for(acquire, STEP_S)

    async def reacquire_and_reload(self) -> None:
        """What hung in the report: a plain acquire on the first boss, then a reload that
        serves; the loop turned meanwhile, and nothing is left held."""
        before = self.beats
        lease = await asyncio.wait_for(self.boss.acquire(900, "again", "low", 0, 10), STEP_S)
        assert lease.held
        await self.boss.release(lease)
        model = await self.load_low()
        assert model.state is ManagedModelState.LOADED
        assert await asyncio.wait_for(model.run({"n": 1}), STEP_S) == {"n": 1}
        await self.turns()
        assert self.beats > before
        await asyncio.wait_for(self.loader.unload_all(), STEP_S)
        assert self.boss.held == []


@pytest.fixture
async def scene(make_boss: BossFactory, tmp_path: Path) -> AsyncIterator[Scene]:
    path = tmp_path / "probe.txt"
    path.write_text("probe\n")
    made = Scene(make_boss, path)
    beating = asyncio.ensure_future(made.beat())
    yield made
    beating.cancel()


async def test_acquire_after_preemption(scene: Scene) -> None:
    low = await scene.load_low()
    high = await scene.preempt()
    assert low.state is ManagedModelState.PREEMPTED and low.lease.released
    await scene.high_boss.release(high)
    await scene.reacquire_and_reload()


async def test_acquire_after_preempting_a_model_with_a_call_in_flight(scene: Scene) -> None:
    low = await scene.load_low()
    call = asyncio.ensure_future(low.run({"sleep": 1.5}))
    while low.calls_in_flight == 0:
        await asyncio.sleep(0.01)
    # The call outlives the grace period: the lease is revoked at the deadline, and the
    # weights are freed once the call returns.
    high = await scene.preempt()
    assert low.state is ManagedModelState.PREEMPTED
    await scene.high_boss.release(high)
    await scene.reacquire_and_reload()
    assert await asyncio.wait_for(call, STEP_S) == {"sleep": 1.5}  # the call was let finish


async def test_a_reload_asked_while_the_preemptor_holds_the_gpu_waits_for_it(
    scene: Scene,
) -> None:
    await scene.load_low()
    high = await scene.preempt()
    reload = asyncio.ensure_future(scene.load_low())
    await scene.turns(10)  # the reload queues for VRAM; the loop keeps turning
    assert not reload.done()
    await scene.high_boss.release(high)
    assert (await reload).state is ManagedModelState.LOADED
    await asyncio.wait_for(scene.loader.unload_all(), STEP_S)
    await scene.reacquire_and_reload()


async def test_acquire_after_preemption_inside_an_acquire_block(scene: Scene) -> None:
    async with scene.boss.acquire(900, "low", Priority.LOW, 0) as block:
        low = await asyncio.wait_for(scene.loader.load(scene.path, model_id="low"), STEP_S)
        assert low.lease is block
        high = await scene.preempt()
        # Yielding gives the block's lease back too; leaving the block then does nothing.
        assert low.state is ManagedModelState.PREEMPTED and block.released
        await scene.high_boss.release(high)
    await scene.reacquire_and_reload()


async def test_a_preemption_callback_can_acquire_on_the_same_boss(scene: Scene) -> None:
    low = await scene.load_low()
    again: asyncio.Future[GPULease] = asyncio.get_running_loop().create_future()

    async def take_it_back(request: PreemptionRequest) -> None:
        # Runs in the PreemptionManager's task group, next to the managed loader's unload.
        again.set_result(await scene.boss.acquire(900, "again", Priority.LOW, 0, 10))

    low.lease.on_preempt(take_it_back)
    high = await scene.preempt()
    assert low.state is ManagedModelState.PREEMPTED and not again.done()
    await scene.high_boss.release(high)
    lease = await asyncio.wait_for(again, STEP_S)
    assert lease.held
    await scene.boss.release(lease)
    await scene.reacquire_and_reload()
