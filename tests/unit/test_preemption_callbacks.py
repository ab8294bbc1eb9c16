"""``PreemptionManager``: awaitable callbacks run in one task group, each once per request; a
failing one is logged and does not cancel the others; ``aclose`` cancels those still running."""

from __future__ import annotations

import asyncio
import logging

import pytest

from mlsup.kit.leases import GPULease, PreemptionManager, PreemptionRequest, Priority
from mlsup.kit.leases.results import PreemptNotice


def make_lease(manager: PreemptionManager) -> GPULease:
    return GPULease(
        id="l1", token="t", gpu=0, vram_mb=100, priority=Priority.LOW, model_id="m", epoch=1,
        manager=manager,
    )  # fmt: skip


NOTICE = PreemptNotice(deadline_ms=5_000, now_ms=1_000, priority=Priority.HIGH, requester="big")


async def test_callbacks_run_once_and_a_failure_does_not_cancel_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    manager = PreemptionManager()
    lease = make_lease(manager)
    seen: list[PreemptionRequest] = []
    done = asyncio.Event()

    async def failing(request: PreemptionRequest) -> None:
        raise RuntimeError("holder bug")

    async def slow_but_fine(request: PreemptionRequest) -> None:
        await asyncio.sleep(0.01)
        seen.append(request)
        done.set()

    manager.register(lease, failing)
    manager.register(lease, slow_but_fine)
    with caplog.at_level(logging.ERROR):
        manager.notice(lease, NOTICE)
        manager.notice(lease, NOTICE)  # the same request again: no second call
        await asyncio.wait_for(done.wait(), 10)
    assert [r.requester for r in seen] == ["big"]
    assert seen[0].remaining_s == pytest.approx(4.0, abs=0.5)
    assert "holder bug" in caplog.text and "l1" in caplog.text
    await manager.aclose()


async def test_aclose_cancels_callbacks_still_running() -> None:
    manager = PreemptionManager()
    lease = make_lease(manager)
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def hangs(request: PreemptionRequest) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    manager.register(lease, hangs)
    manager.notice(lease, NOTICE)
    await asyncio.wait_for(started.wait(), 10)
    await manager.aclose()
    assert cancelled.is_set()
