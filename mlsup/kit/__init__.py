"""The construction kit: VRAM leases, device inventory, loaders, managed loaders, idle unloading.

Usable directly inside any process; the supervisor runs the same kit out of process. Names are
imported on first use, so ``import mlsup.kit`` does not import redis.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlsup.kit.devices import Device, DeviceKind
    from mlsup.kit.embedded_redis import EmbeddedRedis
    from mlsup.kit.leases import (
        GPUBoss,
        GPULease,
        GpuSnapshot,
        LeaseTiming,
        PreemptionManager,
        PreemptionRequest,
        Priority,
        SyncGPUBoss,
    )

#: Public name -> module that defines it.
_LAZY = {
    "GPUBoss": "mlsup.kit.leases",
    "GPULease": "mlsup.kit.leases",
    "GpuSnapshot": "mlsup.kit.leases",
    "LeaseTiming": "mlsup.kit.leases",
    "PreemptionManager": "mlsup.kit.leases",
    "PreemptionRequest": "mlsup.kit.leases",
    "Priority": "mlsup.kit.leases",
    "SyncGPUBoss": "mlsup.kit.leases",
    "Device": "mlsup.kit.devices",
    "DeviceKind": "mlsup.kit.devices",
    "EmbeddedRedis": "mlsup.kit.embedded_redis",
}

__all__ = [
    "Device",
    "DeviceKind",
    "EmbeddedRedis",
    "GPUBoss",
    "GPULease",
    "GpuSnapshot",
    "LeaseTiming",
    "PreemptionManager",
    "PreemptionRequest",
    "Priority",
    "SyncGPUBoss",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mlsup.kit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
