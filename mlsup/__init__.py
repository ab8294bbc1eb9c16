"""mlsup: run many ML models on one workstation's GPUs from many programs at once.

The public API is what ``__all__`` lists; everything else may change between releases.
Heavy runtimes (torch, llama_cpp, ...) are imported only by the loaders that need them, so
``import mlsup`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlsup.errors import (
    BenchmarkError,
    CannotListen,
    CapacityExceeded,
    ConfigError,
    DeviceError,
    FallbackExhausted,
    IllegalTransition,
    Interrupt,
    InvalidArgument,
    InvalidJobData,
    InvalidRequest,
    JobError,
    JobFailed,
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
    NoWorkerLog,
    PeerGone,
    Preempted,
    ProtocolError,
    QueueFull,
    RemoteError,
    RequestTimeout,
    ServiceNotFound,
    ShutdownRequested,
    SupervisorUnavailable,
    TransportError,
    UnsupportedOperation,
    UsageError,
    WorkerCrashed,
    YieldRequested,
)
from mlsup.lazy import lazy_exports

if TYPE_CHECKING:
    from mlsup.kit import (
        DiffusersLoader,
        DiffusersManagedLoader,
        GGUFModelLoader,
        GPUBoss,
        GPULease,
        HFManagedLoader,
        HFModelLoader,
        IdleResourceManager,
        ManagedModelLoader,
        ModelLoader,
        ModelSpec,
        ONNXLoader,
        PreemptionManager,
        PreemptionRequest,
        Priority,
        SyncGPUBoss,
        ValidatedLlamaLoader,
        WhisperLoader,
        load_manifest,
    )
    from mlsup.proxy import (
        AsyncModelProxy,
        AsyncSupervisorProxy,
        ModelProxy,
        SupervisorProxy,
        aconnect,
        connect,
    )

__version__ = "0.1.0.dev0"

#: The proxy's names, imported on first use (they pull zmq and numpy).
_PROXY = frozenset(
    {
        "AsyncModelProxy",
        "AsyncSupervisorProxy",
        "ModelProxy",
        "SupervisorProxy",
        "aconnect",
        "connect",
    }
)

#: Kit names, imported on first use: ``import mlsup`` imports neither redis nor numpy.
_KIT = frozenset(
    {
        "DiffusersLoader",
        "DiffusersManagedLoader",
        "GGUFModelLoader",
        "GPUBoss",
        "GPULease",
        "HFManagedLoader",
        "HFModelLoader",
        "IdleResourceManager",
        "ManagedModelLoader",
        "ModelLoader",
        "ModelSpec",
        "ONNXLoader",
        "PreemptionManager",
        "PreemptionRequest",
        "Priority",
        "SyncGPUBoss",
        "ValidatedLlamaLoader",
        "WhisperLoader",
        "load_manifest",
    }
)

__all__ = [
    "AsyncModelProxy",
    "AsyncSupervisorProxy",
    "BenchmarkError",
    "CannotListen",
    "CapacityExceeded",
    "ConfigError",
    "DeviceError",
    "DiffusersLoader",
    "DiffusersManagedLoader",
    "FallbackExhausted",
    "GGUFModelLoader",
    "GPUBoss",
    "GPULease",
    "HFManagedLoader",
    "HFModelLoader",
    "IdleResourceManager",
    "IllegalTransition",
    "Interrupt",
    "InvalidArgument",
    "InvalidJobData",
    "InvalidRequest",
    "JobError",
    "JobFailed",
    "LeaseError",
    "LeaseLost",
    "LeaseNotHeld",
    "LeaseTimeout",
    "ManagedModelLoader",
    "MlsupError",
    "ModelError",
    "ModelFailed",
    "ModelLoadError",
    "ModelLoader",
    "ModelNotFound",
    "ModelOOM",
    "ModelProxy",
    "ModelSpec",
    "NoWorkerLog",
    "ONNXLoader",
    "PeerGone",
    "Preempted",
    "PreemptionManager",
    "PreemptionRequest",
    "Priority",
    "ProtocolError",
    "QueueFull",
    "RemoteError",
    "RequestTimeout",
    "ServiceNotFound",
    "ShutdownRequested",
    "SupervisorProxy",
    "SupervisorUnavailable",
    "SyncGPUBoss",
    "TransportError",
    "UnsupportedOperation",
    "UsageError",
    "ValidatedLlamaLoader",
    "WhisperLoader",
    "WorkerCrashed",
    "YieldRequested",
    "__version__",
    "aconnect",
    "connect",
    "load_manifest",
]


#: Lazily imported name -> the module that defines it.
_LAZY = {**dict.fromkeys(_KIT, "mlsup.kit"), **dict.fromkeys(_PROXY, "mlsup.proxy")}


__getattr__ = lazy_exports(__name__, _LAZY)
