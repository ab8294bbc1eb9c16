"""VRAM leases coordinated through Redis (see docs/architecture.md, "The life of a lease").

Pure decisions live in :mod:`.policy` (and, for atomicity, in the Lua scripts that mirror it);
Redis I/O in :mod:`.store`; the per-process API in :mod:`.boss` and :mod:`.sync`.
"""

from __future__ import annotations

from mlsup.kit.leases.boss import GPUBoss
from mlsup.kit.leases.lease import GPULease, PreemptionRequest
from mlsup.kit.leases.preemption import PreemptionManager
from mlsup.kit.leases.priority import Priority
from mlsup.kit.leases.snapshot import GpuSnapshot, LeaseInfo
from mlsup.kit.leases.sync import SyncGPUBoss
from mlsup.kit.leases.timing import LeaseTiming

__all__ = [
    "GPUBoss",
    "GPULease",
    "GpuSnapshot",
    "LeaseInfo",
    "LeaseTiming",
    "PreemptionManager",
    "PreemptionRequest",
    "Priority",
    "SyncGPUBoss",
]
