"""The shape of ``mlsup.toml`` as msgspec types, and the translation of msgspec's validation
errors into :class:`~mlsup.errors.ConfigError` that name the file, the model and the field.

Unknown keys are errors everywhere (a typo must not be silently ignored), except inside the
tables whose owners validate them: ``options`` (the loader's), ``[[devices]]`` (the device
layer's), ``[supervisor]`` (:mod:`mlsup.supervisor.config`), and the three tables of the
outward layers, kept opaque here: ``[http]`` (the gateway), ``[queues.<name>]`` (the queue
runner) and ``services_root`` (the service registry).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from mlsup.defaults import IDLE_TIMEOUT_S
from mlsup.errors import ConfigError

__all__ = ["PRIORITIES", "ConfigFile", "ModelTable", "RedisTable", "Where", "validate"]

#: Priority names, lowest first (the lease layer's ``Priority`` has the same members).
PRIORITIES = ("low", "normal", "high", "critical")

_NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


class _Table(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class ModelTable(_Table, frozen=True):
    """One ``[models.<id>]`` table, before its path is resolved."""

    loader: _NonEmpty
    path: _NonEmpty
    vram_mb: Annotated[int, msgspec.Meta(gt=0)] | None = None
    priority: Literal["low", "normal", "high", "critical"] = "normal"
    idle_timeout_s: Annotated[float, msgspec.Meta(ge=0)] = IDLE_TIMEOUT_S
    preload: bool = False
    options: dict[str, Any] = {}


class RedisTable(_Table, frozen=True):
    """The ``[redis]`` table: ``url`` None means an embedded Redis in the runtime directory."""

    url: str | None = None
    prefix: str = ""


class ConfigFile(_Table, frozen=True):
    """The whole file; model tables are checked one by one (:class:`ModelTable`) so that
    their errors name the model."""

    models_dir: str = "."
    redis: RedisTable = RedisTable()
    devices: list[dict[str, Any]] = []
    models: dict[str, dict[str, Any]] = {}
    supervisor: dict[str, Any] = {}
    http: dict[str, Any] | None = None  #: the gateway's; validated by it
    queues: dict[str, dict[str, Any]] | None = None  #: the queue runner's; validated by it
    services_root: str | None = None  #: the service registry's; validated by it


#: What each field must be, said the way a person fixes it.
_MUST = {
    "loader": "must be a non-empty string",
    "path": "must be a non-empty string",
    "vram_mb": "must be a positive integer (MB)",
    "priority": f"must be one of {', '.join(PRIORITIES)}",
    "idle_timeout_s": "must be a number ≥ 0 (seconds)",
    "preload": "must be true or false",
    "options": "must be a table",
    "models_dir": "must be a string",
    "models": "must be a table of [models.<id>] tables",
    "devices": "must be an array of [[devices]] tables",
    "redis": "must be a table",
    "redis.url": "must be a string",
    "redis.prefix": "must be a string",
    "supervisor": "must be a [supervisor] table",
    "http": "must be an [http] table",
    "queues": "must be a table of [queues.<name>] tables",
    "services_root": "must be a string",
}
_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_KEY = re.compile(r"(?P<what>missing required|unknown) field `(?P<key>[^`]+)`")


@dataclass(frozen=True)
class Where:
    """Where in a configuration file a problem is: file, model (if any), field (if any)."""

    file: str
    model: str | None
    field: str | None

    def error(self, problem: str) -> ConfigError:
        """A ConfigError saying problem at this place."""
        parts = [self.file]
        if self.model is not None:
            parts.append(f"[models.{self.model}]")
        if self.field is not None:
            parts.append(self.field)
        return ConfigError(
            f"{': '.join(parts)}: {problem}", file=self.file, model=self.model, field=self.field
        )


_T = TypeVar("_T")


def validate(
    data: Mapping[str, Any],
    kind: type[_T],
    source: str,
    model: str | None,
    *,
    table: str = "",
    must: Mapping[str, str] = _MUST,
) -> _T:
    """data as kind; a ConfigError naming source, model and the offending field otherwise.

    ``table`` is the name of the table data came from (``supervisor``), prefixed to field
    names; ``must`` says what each field must be.
    """
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        raise _config_error(str(exc), data, kind, Where(source, model, None), table, must) from None


def _config_error(  # noqa: PLR0917 - one private call site, all needed
    text: str,
    data: Mapping[str, Any],
    kind: type,
    at: Where,
    table: str,
    must: Mapping[str, str],
) -> ConfigError:
    found = _AT.search(text)
    path = found.group("path").lstrip(".") if found else ""
    prefix = f"{table}." if table else ""
    key = _KEY.search(text)
    if key is not None:
        name = f"{path}.{key['key']}" if path else key["key"]
        where = Where(at.file, at.model, prefix + name)
        if key["what"] == "missing required":
            return where.error("is required")
        if path:
            return where.error("unknown key")
        known = ", ".join(sorted(getattr(kind, "__struct_fields__", ())))
        owner = f"[{table}]" if table else "a model" if at.model else "the file"
        return where.error(f"unknown key; {owner} takes {known}")
    path = path.split("[...]")[0]  # a value inside a table of tables: name the table
    where = Where(at.file, at.model, prefix + path if path else table or None)
    what = must.get(path)
    if what is None:  # somewhere no table above names (inside a list, say): msgspec's words
        return where.error(text.split(" - at ", maxsplit=1)[0])
    return where.error(f"{what}, not {_lookup(data, path)!r}")


def _lookup(data: Any, path: str) -> Any:
    for part in path.split(".") if path else ():
        data = data.get(part) if isinstance(data, Mapping) else None
    return data
