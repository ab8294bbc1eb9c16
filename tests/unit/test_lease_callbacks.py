"""``GPULease.on_lost``: loss callbacks run once, also when registered after the loss."""

from __future__ import annotations

from mlsup.errors import LeaseLost
from mlsup.kit.leases import GPULease, Priority


def make_lease() -> GPULease:
    return GPULease(
        id="l1", token="t", gpu=0, vram_mb=100, priority=Priority.NORMAL, model_id="m", epoch=1
    )


def test_loss_callbacks_run_once_with_the_error() -> None:
    lease = make_lease()
    seen: list[LeaseLost] = []
    lease.on_lost(seen.append)
    error = lease.mark_lost("expired")
    lease.mark_lost("revoked")  # already lost: neither a new error nor a second call
    assert seen == [error] and lease.lost is error and "expired" in str(error)


def test_a_callback_registered_after_the_loss_runs_at_once() -> None:
    lease = make_lease()
    error = lease.mark_lost("vanished")
    seen: list[LeaseLost] = []
    lease.on_lost(seen.append)
    assert seen == [error]


def test_a_failing_callback_does_not_stop_the_others() -> None:
    lease = make_lease()
    seen: list[str] = []

    def broken(error: LeaseLost) -> None:
        raise RuntimeError("user bug")

    lease.on_lost(broken)
    lease.on_lost(lambda error: seen.append(error.context["reason"]))
    lease.mark_lost("expired")
    assert seen == ["expired"]
