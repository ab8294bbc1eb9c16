"""The construction kit: VRAM leases, device inventory, loaders, managed loaders, idle unloading.

Usable directly inside any process; the supervisor runs the same kit out of process. Names are
imported on first use, so ``import mlsup.kit`` imports neither redis nor any runtime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlsup.lazy import lazy_exports

if TYPE_CHECKING:
    from mlsup.kit.devices import Device, DeviceKind
    from mlsup.kit.embedded_redis import EmbeddedRedis
    from mlsup.kit.idle import IdleResourceManager
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
    from mlsup.kit.loaders import (
        DiffusersLoader,
        GGUFModelLoader,
        HFModelLoader,
        ModelLoader,
        ONNXLoader,
        ValidatedLlamaLoader,
        WhisperLoader,
        get_loader,
        loader_names,
    )
    from mlsup.kit.managed import (
        DiffusersManagedLoader,
        HFManagedLoader,
        ManagedModel,
        ManagedModelLoader,
        ManagedModelState,
    )
    from mlsup.kit.managed_llm import EmbeddedLLMLoader
    from mlsup.kit.manifest import Manifest, ModelSpec, RedisSettings, load_manifest

#: Public name -> module that defines it.
_LAZY = {
    "Device": "mlsup.kit.devices",
    "DeviceKind": "mlsup.kit.devices",
    "EmbeddedRedis": "mlsup.kit.embedded_redis",
    "IdleResourceManager": "mlsup.kit.idle",
    "GPUBoss": "mlsup.kit.leases",
    "GPULease": "mlsup.kit.leases",
    "GpuSnapshot": "mlsup.kit.leases",
    "LeaseTiming": "mlsup.kit.leases",
    "PreemptionManager": "mlsup.kit.leases",
    "PreemptionRequest": "mlsup.kit.leases",
    "Priority": "mlsup.kit.leases",
    "SyncGPUBoss": "mlsup.kit.leases",
    "DiffusersLoader": "mlsup.kit.loaders",
    "GGUFModelLoader": "mlsup.kit.loaders",
    "HFModelLoader": "mlsup.kit.loaders",
    "ModelLoader": "mlsup.kit.loaders",
    "ONNXLoader": "mlsup.kit.loaders",
    "ValidatedLlamaLoader": "mlsup.kit.loaders",
    "WhisperLoader": "mlsup.kit.loaders",
    "get_loader": "mlsup.kit.loaders",
    "loader_names": "mlsup.kit.loaders",
    "DiffusersManagedLoader": "mlsup.kit.managed",
    "HFManagedLoader": "mlsup.kit.managed",
    "ManagedModel": "mlsup.kit.managed",
    "ManagedModelLoader": "mlsup.kit.managed",
    "ManagedModelState": "mlsup.kit.managed",
    "EmbeddedLLMLoader": "mlsup.kit.managed_llm",
    "Manifest": "mlsup.kit.manifest",
    "ModelSpec": "mlsup.kit.manifest",
    "RedisSettings": "mlsup.kit.manifest",
    "load_manifest": "mlsup.kit.manifest",
}

# Spelled out (not sorted(_LAZY)) so that ruff and mypy see the re-exports; a test keeps
# the two in step.
__all__ = [
    "Device",
    "DeviceKind",
    "DiffusersLoader",
    "DiffusersManagedLoader",
    "EmbeddedLLMLoader",
    "EmbeddedRedis",
    "GGUFModelLoader",
    "GPUBoss",
    "GPULease",
    "GpuSnapshot",
    "HFManagedLoader",
    "HFModelLoader",
    "IdleResourceManager",
    "LeaseTiming",
    "ManagedModel",
    "ManagedModelLoader",
    "ManagedModelState",
    "Manifest",
    "ModelLoader",
    "ModelSpec",
    "ONNXLoader",
    "PreemptionManager",
    "PreemptionRequest",
    "Priority",
    "RedisSettings",
    "SyncGPUBoss",
    "ValidatedLlamaLoader",
    "WhisperLoader",
    "get_loader",
    "load_manifest",
    "loader_names",
]


__getattr__ = lazy_exports(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
