"""mlsup: run many ML models on one workstation's GPUs from many programs at once.

The public API is what ``__all__`` lists; everything else may change between releases.
Heavy runtimes (torch, llama_cpp, ...) are imported only by the loaders that need them, so
``import mlsup`` stays fast.
"""

from __future__ import annotations

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

__version__ = "0.1.0.dev0"

__all__ = [
    "CapacityExceeded",
    "ConfigError",
    "DeviceError",
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
    "ProtocolError",
    "RemoteError",
    "RequestTimeout",
    "ShutdownRequested",
    "SupervisorUnavailable",
    "TransportError",
    "WorkerCrashed",
    "YieldRequested",
    "__version__",
]
