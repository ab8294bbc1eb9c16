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
    from mlsup.kit import (
        DiffusersLoader,
        GGUFModelLoader,
        HFModelLoader,
        IdleResourceManager,
        ModelLoader,
        ModelSpec,
        ONNXLoader,
        ValidatedLlamaLoader,
        WhisperLoader,
        load_manifest,
    )

__version__ = "0.1.0.dev0"

# Kit names re-exported lazily: importing them pulls numpy, which ``import mlsup`` should not.
_KIT = (
    "DiffusersLoader",
    "GGUFModelLoader",
    "HFModelLoader",
    "IdleResourceManager",
    "ModelLoader",
    "ModelSpec",
    "ONNXLoader",
    "ValidatedLlamaLoader",
    "WhisperLoader",
    "load_manifest",
)

__all__ = [
    "CapacityExceeded",
    "ConfigError",
    "DeviceError",
    "DiffusersLoader",
    "GGUFModelLoader",
    "HFModelLoader",
    "IdleResourceManager",
    "Interrupt",
    "LeaseError",
    "LeaseLost",
    "LeaseNotHeld",
    "LeaseTimeout",
    "MlsupError",
    "ModelError",
    "ModelFailed",
    "ModelLoadError",
    "ModelLoader",
    "ModelNotFound",
    "ModelOOM",
    "ModelSpec",
    "ONNXLoader",
    "Preempted",
    "ProtocolError",
    "RemoteError",
    "RequestTimeout",
    "ShutdownRequested",
    "SupervisorUnavailable",
    "TransportError",
    "ValidatedLlamaLoader",
    "WhisperLoader",
    "WorkerCrashed",
    "YieldRequested",
    "__version__",
    "load_manifest",
]


def __getattr__(name: str) -> Any:
    if name in _KIT:
        import mlsup.kit

        return getattr(mlsup.kit, name)
    raise AttributeError(f"module 'mlsup' has no attribute {name!r}")
