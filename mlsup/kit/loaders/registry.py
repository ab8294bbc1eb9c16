"""Loaders by name: the built-in ones, and those other packages register by entry point.

A package adds a loader with an entry point in the ``mlsup.loaders`` group::

    [project.entry-points."mlsup.loaders"]
    my-runtime = "my_package.loader:MyLoader"     # a ModelLoader subclass

Built-in names win over entry points of the same name. Classes are imported only when asked
for, so listing names stays cheap.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from mlsup.errors import ConfigError
from mlsup.kit.loaders.base import ModelLoader

__all__ = ["ENTRY_POINT_GROUP", "get_loader", "loader_names"]

#: Entry point group where other packages register loaders.
ENTRY_POINT_GROUP = "mlsup.loaders"

_BUILTIN = {
    "gguf": "mlsup.kit.loaders.gguf:GGUFModelLoader",
    "validated-llama": "mlsup.kit.loaders.validated_llama:ValidatedLlamaLoader",
    "hf": "mlsup.kit.loaders.hf:HFModelLoader",
    "diffusers": "mlsup.kit.loaders.diffusion:DiffusersLoader",
    "whisper": "mlsup.kit.loaders.whisper:WhisperLoader",
    "onnx": "mlsup.kit.loaders.onnx:ONNXLoader",
}


def _plugins() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def loader_names() -> list[str]:
    """Every loader name usable in a manifest: built-in first, then registered ones."""
    return [*_BUILTIN, *sorted(set(_plugins()) - set(_BUILTIN))]


def get_loader(name: str) -> type[ModelLoader]:
    """The loader class registered as ``name``; ConfigError for an unknown or broken one."""
    target = _BUILTIN.get(name) or _plugins().get(name)
    if target is None:
        raise ConfigError(
            f"unknown loader {name!r}; known loaders: {', '.join(loader_names())}",
            field="loader",
            loader=name,
        )
    module_name, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"loader {name!r} ({target}) cannot be imported: {exc}", field="loader", loader=name
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, ModelLoader)):
        raise ConfigError(
            f"loader {name!r} ({target}) is not a ModelLoader subclass", field="loader", loader=name
        )
    return cls
