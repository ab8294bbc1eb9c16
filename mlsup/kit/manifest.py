"""The model manifest: ``mlsup.toml`` parsed into frozen, validated, plain-data dataclasses.

Shape (see docs/architecture.md, "Where things live")::

    models_dir = "~/models"            # relative model paths resolve here; default: the file's dir
    [redis]                            # optional: url (absent: embedded Redis), prefix
    [[devices]]                        # optional: passed through as validated plain data
    [models.<id>]                      # loader, path, vram_mb?, priority, idle_timeout_s,
                                       # preload, options

Every validation error is a :class:`~mlsup.errors.ConfigError` whose context names the
``file``, the ``model`` and the ``field`` (the schema and the error wording live in
:mod:`mlsup.kit.manifest_schema`; unknown keys are errors). Paths are resolved here, once;
nothing is downloaded. A :class:`ModelSpec` crosses to worker processes as msgpack through
:meth:`ModelSpec.to_dict` / :meth:`ModelSpec.from_dict` (which validates again: the receiver
trusts no one).
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
from mlsup.kit.manifest_schema import PRIORITIES, ConfigFile, ModelTable, Where, validate

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
            "options": _plain(dict(self.options), Where("<spec>", self.id, "options")),
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
            where = Where(source, model_id, "path")
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
    #: The ``[http]`` table (None when absent), as plain data: the gateway validates it.
    http: Mapping[str, Any] | None = None
    #: The ``[queues.<name>]`` tables (None when absent): the queue runner validates them.
    queues: Mapping[str, Mapping[str, Any]] | None = None
    #: Where the service registry looks for ``services.yaml`` files; it validates the value.
    services_root: str | None = None

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
    top = validate(data, ConfigFile, source, None)
    models_dir = (base_dir / Path(top.models_dir).expanduser()).resolve()
    specs = {}
    for model_id, table in top.models.items():
        specs[model_id] = _model_spec(model_id, table, models_dir, source)
    return Manifest(
        source=source,
        models_dir=models_dir,
        redis=RedisSettings(url=top.redis.url, prefix=top.redis.prefix),
        devices=tuple(
            _plain(d, Where(source, None, f"devices[{i}]")) for i, d in enumerate(top.devices)
        ),
        models=specs,
        supervisor=top.supervisor,
        http=top.http,
        queues=top.queues,
        services_root=top.services_root,
    )


def _model_spec(
    model_id: str, table: Mapping[str, Any], models_dir: Path, source: str
) -> ModelSpec:
    model = validate(table, ModelTable, source, model_id)
    _check_loader(model.loader, Where(source, model_id, "loader"))
    return ModelSpec(
        id=model_id,
        loader=model.loader,
        path=str(models_dir / Path(model.path).expanduser()),
        vram_mb=model.vram_mb,
        priority=model.priority,
        idle_timeout_s=float(model.idle_timeout_s),
        preload=model.preload,
        options=_plain(model.options, Where(source, model_id, "options")),
    )


def _check_loader(name: str, where: Where) -> None:
    from mlsup.kit.loaders.registry import is_loader, loader_names

    if not is_loader(name):
        raise where.error(f"unknown loader {name!r}; known loaders: {', '.join(loader_names())}")


def _plain(value: Any, where: Where) -> Any:
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
