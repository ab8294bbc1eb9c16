"""The model manifest: ``mlsup.toml`` parsed into frozen, validated, plain-data dataclasses.

Shape (see docs/architecture.md, "Where things live")::

    models_dir = "~/models"            # relative model paths resolve here; default: the file's dir
    [redis]                            # optional: url (absent: embedded Redis), prefix
    [[devices]]                        # optional: passed through as validated plain data
    [models.<id>]                      # loader, path, vram_mb?, priority, idle_timeout_s,
                                       # preload, options

Every validation error is a :class:`~mlsup.errors.ConfigError` whose context names the
``file``, the ``model`` and the ``field``. Paths are resolved here, once; nothing is downloaded.
A :class:`ModelSpec` crosses to worker processes as msgpack through :meth:`ModelSpec.to_dict` /
:meth:`ModelSpec.from_dict` (which validates again: the receiver trusts no one).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlsup.defaults import IDLE_TIMEOUT_S
from mlsup.errors import ConfigError, ModelNotFound

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "CONFIG_ENV",
    "PRIORITIES",
    "Manifest",
    "ModelSpec",
    "RedisSettings",
    "load_manifest",
    "parse_manifest",
]

#: Environment variable naming the configuration file.
CONFIG_ENV = "MLSUP_CONFIG"
#: Priority names, lowest first (the lease layer's ``Priority`` has the same members).
PRIORITIES = ("low", "normal", "high", "critical")
_MODEL_KEYS = {"loader", "path", "vram_mb", "priority", "idle_timeout_s", "preload", "options"}
_PLAIN_SCALARS = (str, int, float, bool)


@dataclass(frozen=True)
class RedisSettings:
    """The ``[redis]`` table: ``url`` None means an embedded Redis in the runtime directory."""

    url: str | None = None
    prefix: str = ""


@dataclass(frozen=True)
class ModelSpec:
    """One ``[models.<id>]`` entry, with its path resolved to an absolute one.

    Plain data only (it is sent to workers as msgpack): ``options`` holds strings, numbers,
    booleans, lists and tables. ``idle_timeout_s`` 0 means never unload for idleness.
    """

    id: str
    loader: str
    path: str
    vram_mb: int | None = None
    priority: str = "normal"
    idle_timeout_s: float = IDLE_TIMEOUT_S
    preload: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The spec as a plain dict (msgpack-safe)."""
        return {
            "id": self.id,
            "loader": self.loader,
            "path": self.path,
            "vram_mb": self.vram_mb,
            "priority": self.priority,
            "idle_timeout_s": self.idle_timeout_s,
            "preload": self.preload,
            "options": _plain(dict(self.options), _Where("<spec>", self.id, "options")),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<spec>") -> ModelSpec:
        """Rebuild and validate a spec sent by :meth:`to_dict`; ConfigError when malformed."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: a model spec must be a map", file=source)
        model_id = data.get("id")
        if not isinstance(model_id, str) or not model_id:
            raise ConfigError(f"{source}: spec without an id", file=source, field="id")
        path = data.get("path")
        if not isinstance(path, str) or not os.path.isabs(path):
            where = _Where(source, model_id, "path")
            raise where.error("must be an absolute path string")
        table = {k: v for k, v in data.items() if k not in ("id", "path") and v is not None}
        return _model_spec(model_id, {**table, "path": path}, Path("/"), source)


@dataclass(frozen=True)
class Manifest:
    """A parsed ``mlsup.toml``: models directory, Redis settings, devices and models."""

    source: str
    models_dir: Path
    redis: RedisSettings = RedisSettings()
    devices: tuple[Mapping[str, Any], ...] = ()
    models: Mapping[str, ModelSpec] = field(default_factory=dict)
    #: The ``[supervisor]`` table, as plain data: the supervisor validates its own settings.
    supervisor: Mapping[str, Any] = field(default_factory=dict)

    def model(self, model_id: str) -> ModelSpec:
        """The spec of ``model_id``; ModelNotFound listing the known ids otherwise."""
        try:
            return self.models[model_id]
        except KeyError:
            known = ", ".join(sorted(self.models)) or "none"
            raise ModelNotFound(
                f"no model {model_id!r} in {self.source}; known models: {known}",
                model=model_id,
                file=self.source,
            ) from None


def load_manifest(path: str | Path | None = None) -> Manifest:
    """Read and validate a configuration file (default: ``$MLSUP_CONFIG``)."""
    if path is None:
        env = os.environ.get(CONFIG_ENV)
        if not env:
            raise ConfigError(f"no configuration file given and {CONFIG_ENV} is not set")
        path = env
    file = Path(path).expanduser()
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror}", file=str(file)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file} is not valid TOML: {exc}", file=str(file)) from exc
    return parse_manifest(data, source=str(file), base_dir=file.resolve().parent)


def parse_manifest(data: Mapping[str, Any], *, source: str, base_dir: Path) -> Manifest:
    """Validate parsed TOML; relative ``models_dir`` resolves against ``base_dir``."""
    models_dir_raw = data.get("models_dir", ".")
    if not isinstance(models_dir_raw, str):
        raise _Where(source, None, "models_dir").error("must be a string")
    models_dir = (base_dir / Path(models_dir_raw).expanduser()).resolve()
    models = data.get("models", {})
    if not isinstance(models, Mapping):
        raise _Where(source, None, "models").error("must be a table of [models.<id>] tables")
    specs = {}
    for model_id, table in models.items():
        if not isinstance(table, Mapping):
            raise _Where(source, model_id, None).error("must be a table")
        specs[model_id] = _model_spec(model_id, table, models_dir, source)
    return Manifest(
        source=source,
        models_dir=models_dir,
        redis=_redis(data.get("redis", {}), source),
        devices=_devices(data.get("devices", []), source),
        models=specs,
        supervisor=_table(data.get("supervisor", {}), source, "supervisor"),
    )


def _table(value: Any, source: str, name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _Where(source, None, name).error(f"must be a [{name}] table")
    return dict(value)


@dataclass(frozen=True)
class _Where:
    file: str
    model: str | None
    field: str | None

    def error(self, problem: str) -> ConfigError:
        parts = [self.file]
        if self.model is not None:
            parts.append(f"[models.{self.model}]")
        if self.field is not None:
            parts.append(self.field)
        return ConfigError(
            f"{': '.join(parts)}: {problem}", file=self.file, model=self.model, field=self.field
        )


def _model_spec(
    model_id: str, table: Mapping[str, Any], models_dir: Path, source: str
) -> ModelSpec:
    def where(name: str) -> _Where:
        return _Where(source, model_id, name)

    unknown = sorted(set(table) - _MODEL_KEYS)
    if unknown:
        raise where(unknown[0]).error(
            f"unknown key; a model takes {', '.join(sorted(_MODEL_KEYS))}"
        )
    loader = _require(table, "loader", str, where("loader"))
    _check_loader(loader, where("loader"))
    raw_path = _require(table, "path", str, where("path"))
    vram_mb = table.get("vram_mb")
    if vram_mb is not None and (not _is_int(vram_mb) or vram_mb <= 0):
        raise where("vram_mb").error(f"must be a positive integer (MB), not {vram_mb!r}")
    priority = table.get("priority", "normal")
    if priority not in PRIORITIES:
        raise where("priority").error(f"must be one of {', '.join(PRIORITIES)}, not {priority!r}")
    idle = table.get("idle_timeout_s", IDLE_TIMEOUT_S)
    if not _is_number(idle) or idle < 0:
        raise where("idle_timeout_s").error(f"must be a number ≥ 0 (seconds), not {idle!r}")
    preload = table.get("preload", False)
    if not isinstance(preload, bool):
        raise where("preload").error(f"must be true or false, not {preload!r}")
    options = table.get("options", {})
    if not isinstance(options, Mapping):
        raise where("options").error("must be a table")
    return ModelSpec(
        id=model_id,
        loader=loader,
        path=str(models_dir / Path(raw_path).expanduser()),
        vram_mb=vram_mb,
        priority=priority,
        idle_timeout_s=float(idle),
        preload=preload,
        options=_plain(dict(options), where("options")),
    )


def _check_loader(name: str, where: _Where) -> None:
    from mlsup.kit.loaders.registry import loader_names

    names = loader_names()
    if name not in names:
        raise where.error(f"unknown loader {name!r}; known loaders: {', '.join(names)}")


def _redis(table: Any, source: str) -> RedisSettings:
    if not isinstance(table, Mapping):
        raise _Where(source, None, "redis").error("must be a table")
    url, prefix = table.get("url"), table.get("prefix", "")
    if url is not None and not isinstance(url, str):
        raise _Where(source, None, "redis.url").error("must be a string")
    if not isinstance(prefix, str):
        raise _Where(source, None, "redis.prefix").error("must be a string")
    return RedisSettings(url=url, prefix=prefix)


def _devices(value: Any, source: str) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(value, list) or not all(isinstance(d, Mapping) for d in value):
        raise _Where(source, None, "devices").error("must be an array of [[devices]] tables")
    return tuple(
        _plain(dict(d), _Where(source, None, f"devices[{i}]")) for i, d in enumerate(value)
    )


def _require(table: Mapping[str, Any], key: str, kind: type, where: _Where) -> Any:
    value = table.get(key)
    if value is None:
        raise where.error("is required")
    if not isinstance(value, kind) or (kind is str and not value):
        raise where.error(f"must be a non-empty {kind.__name__}, not {value!r}")
    return value


def _plain(value: Any, where: _Where) -> Any:
    """Check that ``value`` is plain data (msgpack-safe); TOML dates and times are not."""
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise where.error("keys must be strings")
        return {k: _plain(v, where) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    if value is None or isinstance(value, _PLAIN_SCALARS):
        return value
    raise where.error(f"holds {type(value).__name__} {value!r}; use strings, numbers, booleans")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
