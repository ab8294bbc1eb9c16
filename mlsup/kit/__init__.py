"""The construction kit: VRAM leases, device inventory, loaders, managed loaders, idle unloading.

Usable directly inside any process; the supervisor runs the same kit out of process. Names are
imported on first use, so ``import mlsup.kit`` costs nothing until a loader is asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlsup.kit.idle import IdleResourceManager
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
    from mlsup.kit.manifest import Manifest, ModelSpec, RedisSettings, load_manifest

# public name -> module that defines it
_LAZY = {
    "DiffusersLoader": "mlsup.kit.loaders",
    "GGUFModelLoader": "mlsup.kit.loaders",
    "HFModelLoader": "mlsup.kit.loaders",
    "ModelLoader": "mlsup.kit.loaders",
    "ONNXLoader": "mlsup.kit.loaders",
    "ValidatedLlamaLoader": "mlsup.kit.loaders",
    "WhisperLoader": "mlsup.kit.loaders",
    "get_loader": "mlsup.kit.loaders",
    "loader_names": "mlsup.kit.loaders",
    "IdleResourceManager": "mlsup.kit.idle",
    "Manifest": "mlsup.kit.manifest",
    "ModelSpec": "mlsup.kit.manifest",
    "RedisSettings": "mlsup.kit.manifest",
    "load_manifest": "mlsup.kit.manifest",
}

__all__ = [
    "DiffusersLoader",
    "GGUFModelLoader",
    "HFModelLoader",
    "IdleResourceManager",
    "Manifest",
    "ModelLoader",
    "ModelSpec",
    "ONNXLoader",
    "RedisSettings",
    "ValidatedLlamaLoader",
    "WhisperLoader",
    "get_loader",
    "load_manifest",
    "loader_names",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mlsup.kit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
