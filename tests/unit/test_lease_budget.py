"""EmbeddedLLMLoader's view of free VRAM: the GPU's free memory, capped by the lease."""

from __future__ import annotations

from mlsup.kit.leases import GPULease, Priority
from mlsup.kit.managed_llm import LeaseBudget


def lease(vram_mb: int) -> GPULease:
    return GPULease(
        id="l", token="t", gpu=0, vram_mb=vram_mb, priority=Priority.NORMAL, model_id="m", epoch=1
    )


def test_the_lease_caps_what_the_loader_plans_with() -> None:
    budget = LeaseBudget(lambda: 24000)
    assert budget() == 24000  # before the lease is granted: the GPU's free memory
    budget.lease = lease(900)
    assert budget() == 900
    budget.lease = lease(30000)
    assert budget() == 24000  # never more than is free


def test_no_gpu_stays_no_gpu() -> None:
    budget = LeaseBudget(lambda: None)
    budget.lease = lease(900)
    assert budget() is None
