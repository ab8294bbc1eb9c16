"""mlsup: run many ML models on one workstation's GPUs from many programs at once.

The public API is what ``__all__`` lists; everything else may change between releases.
Heavy runtimes (torch, llama_cpp, ...) are imported only by the loaders that need them, so
``import mlsup`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlsup.errors import (
    CapacityExceeded,
    ConfigError,
    DeviceError,
    Interrupt,
    LeaseError,
    LeaseLost,
    LeaseNotHeld,
    LeaseTimeout,
    MlsupError,
    ModelError,
    ModelFailed,
    ModelLoadError,
    ModelNotFound,
    ModelOOM,
    Preempted,
    ProtocolError,
    RemoteError,
    RequestTimeout,
    ShutdownRequested,
    SupervisorUnavailable,
    TransportError,
    WorkerCrashed,
    YieldRequested,
)

if TYPE_CHECKING:
    from mlsup.kit.leases import (
        GPUBoss,
        GPULease,
        PreemptionManager,
        PreemptionRequest,
        Priority,
        SyncGPUBoss,
    )

__version__ = "0.1.0.dev0"

#: Public names imported on first use, so that ``import mlsup`` does not import redis.
_LAZY = {
    "GPUBoss": "mlsup.kit.leases",
    "GPULease": "mlsup.kit.leases",
    "PreemptionManager": "mlsup.kit.leases",
    "PreemptionRequest": "mlsup.kit.leases",
    "Priority": "mlsup.kit.leases",
    "SyncGPUBoss": "mlsup.kit.leases",
}

__all__ = [
    "CapacityExceeded",
    "ConfigError",
    "DeviceError",
    "GPUBoss",
    "GPULease",
    "Interrupt",
    "LeaseError",
    "LeaseLost",
    "LeaseNotHeld",
    "LeaseTimeout",
    "MlsupError",
    "ModelError",
    "ModelFailed",
    "ModelLoadError",
    "ModelNotFound",
    "ModelOOM",
    "Preempted",
    "PreemptionManager",
    "PreemptionRequest",
    "Priority",
    "ProtocolError",
    "RemoteError",
    "RequestTimeout",
    "ShutdownRequested",
    "SupervisorUnavailable",
    "SyncGPUBoss",
    "TransportError",
    "WorkerCrashed",
    "YieldRequested",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mlsup' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
