"""Loaders by name: the built-in ones, and those other packages register by entry point.

A package adds a loader with an entry point in the ``mlsup.loaders`` group::

    [project.entry-points."mlsup.loaders"]
    my-runtime = "my_package.loader:MyLoader"     # a ModelLoader subclass

A process (and every process it starts) may also name loaders in the environment, which is how
the test suite and ``mlsup bench`` register the test-only ``probe`` loader without installing
it for users::

    MLSUP_LOADERS="probe=mlsup.testing.loaders:ProbeLoader"     # NAME=module:Class, comma-separated

Built-in names win over the others, and the environment over entry points. Classes are
imported only when asked for, so listing names stays cheap.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import MutableMapping
from importlib.metadata import entry_points

from mlsup.errors import ConfigError
from mlsup.kit.loaders.base import ModelLoader

__all__ = [
    "ENTRY_POINT_GROUP",
    "LOADERS_ENV",
    "get_loader",
    "is_loader",
    "loader_names",
    "register_loader",
]

#: Entry point group where other packages register loaders.
ENTRY_POINT_GROUP = "mlsup.loaders"
#: Environment variable naming more loaders, ``NAME=module:Class`` pairs separated by commas.
LOADERS_ENV = "MLSUP_LOADERS"

_BUILTIN = {
    "gguf": "mlsup.kit.loaders.gguf:GGUFModelLoader",
    "validated-llama": "mlsup.kit.loaders.validated_llama:ValidatedLlamaLoader",
    "hf": "mlsup.kit.loaders.hf:HFModelLoader",
    "diffusers": "mlsup.kit.loaders.diffusion:DiffusersLoader",
    "whisper": "mlsup.kit.loaders.whisper:WhisperLoader",
    "onnx": "mlsup.kit.loaders.onnx:ONNXLoader",
}


def _parse_environment(value: str) -> dict[str, str]:
    """``NAME=module:Class,...`` as {name: target}; ConfigError naming a malformed entry."""
    found: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, equals, target = (text.strip() for text in item.partition("="))
        module, colon, attr = target.partition(":")
        if not (name and equals and module and colon and attr):
            raise ConfigError(
                f"${LOADERS_ENV} entry {item!r} is not NAME=module:Class", field=LOADERS_ENV
            )
        found[name] = target
    return found


def _plugins() -> dict[str, str]:
    """Loaders installed packages register by entry point (reads every package's metadata)."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _registered() -> dict[str, str]:
    """Loaders beyond the built-in ones: the environment's over the entry points'."""
    return {**_plugins(), **_parse_environment(os.environ.get(LOADERS_ENV, ""))}


def register_loader(
    name: str, target: str, environ: MutableMapping[str, str] | None = None
) -> None:
    """Name loader ``target`` (``module:Class``) in ``environ`` (default: ``os.environ``), for
    this process and every process started with that environment (supervisors, workers)."""
    environ = os.environ if environ is None else environ
    entries = _parse_environment(f"{environ.get(LOADERS_ENV, '')},{name}={target}")
    environ[LOADERS_ENV] = ",".join(f"{key}={value}" for key, value in entries.items())


def is_loader(name: str) -> bool:
    """Whether ``name`` is a usable loader name (ConfigError for a malformed environment).

    Built-in and environment names are answered without reading every installed package's
    metadata for entry points: that scan costs about 10 ms of CPU, which each worker paid on
    its way to loading (it validates its model's spec again).
    """
    environment = _parse_environment(os.environ.get(LOADERS_ENV, ""))
    return name in _BUILTIN or name in environment or name in _plugins()


def loader_names() -> list[str]:
    """Every loader name usable in a manifest: built-in first, then registered ones."""
    return [*_BUILTIN, *sorted(set(_registered()) - set(_BUILTIN))]


def get_loader(name: str) -> type[ModelLoader]:
    """The loader class registered as ``name``; ConfigError for an unknown or broken one."""
    target = _BUILTIN.get(name) or _registered().get(name)
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
