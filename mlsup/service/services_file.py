"""One feature's ``services.yaml``: its schema as typed structures, and its validating parser.

The shape is the seed document's "Feature Service Registry"::

    feature:
      id: knowledge-verification            # letters, digits, - and _ (no dots: see below)
      name: Knowledge Verification
      ports: {api: 41233, ml-runner: 41234}
    services:
      - id: ml-runner
        name: Knowledge ML Runner
        type: ml
        port: 41234                         # else feature.ports[<service id>]
        entrypoint: ~/Code/knowledge-platform/ml-runner   # ~ expands; relative: to this file
        startCommand: "source .venv/bin/activate && python -m kv_ml_runner"
        gpu: true
        dependencies: [infrastructure.redis] # <feature>.<service> or infrastructure.redis

Every known key is type-checked (msgspec), and every error is a :class:`ConfigError` whose
message and context name the ``file`` and the ``field`` (``services[0].port``).

Unknown keys are tolerated, not forbidden: a ``services.yaml`` is shared with other tools (the
document's TypeScript ``DeploymentRegistry`` reads the same file) that may own keys mlsup does
not know. A key that looks like a misspelling of a known one (``start_command``, ``dependancies``,
``Port``) is an error naming the key it resembles, so typos still fail loudly.

Ids hold no dots because a dependency is written ``<feature>.<service>``.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import msgspec

from mlsup.defaults import SERVICES_FILE_MAX_BYTES, SERVICES_FILE_MAX_NODES
from mlsup.errors import ConfigError

__all__ = ["Feature", "Service", "load_services_file", "parse_services"]

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_ID_RULE = "must start with a letter or digit and hold only letters, digits, - and _ (no dots)"


class Service(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One entry of ``services``: a process of the feature, usually reached over HTTP."""

    id: str
    name: str = ""
    type: str = ""
    port: Port | None = None
    #: Absolute path (``~`` expanded, relative paths resolved against the file's directory).
    entrypoint: str | None = None
    start_command: str | None = None
    gpu: bool = False
    dependencies: tuple[str, ...] = ()

    @property
    def title(self) -> str:
        """The human name, else the id."""
        return self.name or self.id


class _FeatureTable(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str = ""
    ports: dict[str, Port] = {}


class _Document(msgspec.Struct, frozen=True, kw_only=True):
    feature: _FeatureTable
    services: tuple[Service, ...] = ()


class Feature(msgspec.Struct, frozen=True, kw_only=True):
    """A parsed ``services.yaml``: the feature, its named ports, its services, and its file."""

    id: str
    name: str
    ports: dict[str, int]
    services: tuple[Service, ...]
    #: The file it was read from (errors and listings name it).
    source: str

    def service(self, service_id: str) -> Service | None:
        """The service of that id, or None."""
        return next((s for s in self.services if s.id == service_id), None)


_TOP_KEYS = ("feature", "services")
_FEATURE_KEYS = ("id", "name", "ports")
_SERVICE_KEYS = (
    "id",
    "name",
    "type",
    "port",
    "entrypoint",
    "startCommand",
    "gpu",
    "dependencies",
)


def load_services_file(path: str | os.PathLike[str]) -> Feature:
    """Read and validate one ``services.yaml``; ConfigError naming the file and field."""
    import yaml

    file = Path(path)
    source = str(file)
    limit = SERVICES_FILE_MAX_BYTES
    try:
        # A FIFO or device named services.yaml would block or never end: regular files only.
        if not stat.S_ISREG(file.stat().st_mode):
            raise _error(source, None, "is not a regular file")
        with file.open("rb") as stream:
            raw = stream.read(limit + 1)
    except OSError as exc:
        raise _error(source, None, f"cannot be read: {exc.strerror}") from exc
    if len(raw) > limit:
        raise _error(source, None, f"is larger than {limit} bytes, the limit")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _error(source, None, f"is not UTF-8 text ({exc.reason})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _error(source, None, f"is not valid YAML: {exc}") from exc
    except RecursionError:
        raise _error(source, None, "is nested too deeply to be a services file") from None
    return parse_services(data, source=source, base_dir=file.parent)


def parse_services(data: Any, *, source: str, base_dir: Path) -> Feature:
    """Validate a parsed ``services.yaml`` document (``source`` names it in errors)."""
    if not isinstance(data, Mapping):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise _error(source, None, f"must be a mapping with feature and services, not {kind}")
    _check_size(data, source)
    _check_keys(data, _TOP_KEYS, source, "")
    feature = data.get("feature")
    if isinstance(feature, Mapping):
        if "services" in feature:
            raise _error(
                source, "feature.services", "services belong at the top level, beside feature"
            )
        _check_keys(feature, _FEATURE_KEYS, source, "feature.")
        _check_ports(feature.get("ports"), source)
    services = data.get("services")
    if isinstance(services, list):
        for i, entry in enumerate(services):
            if isinstance(entry, Mapping):
                _check_keys(entry, _SERVICE_KEYS, source, f"services[{i}].")
    try:
        document = msgspec.convert(_without_empty_lists(data), _Document)
    except msgspec.ValidationError as exc:
        raise _validation_error(exc, data, source) from None
    return _feature(document, source, base_dir)


def _without_empty_lists(data: Mapping[str, Any]) -> dict[str, Any]:
    """``services:``, ``ports:`` or ``dependencies:`` with nothing after them mean none."""

    def drop(table: Any, key: str) -> Any:
        if isinstance(table, Mapping) and key in table and table[key] is None:
            return {k: v for k, v in table.items() if k != key}
        return table

    document = dict(drop(data, "services"))
    if "feature" in document:
        document["feature"] = drop(document["feature"], "ports")
    if isinstance(document.get("services"), list):
        document["services"] = [drop(s, "dependencies") for s in document["services"]]
    return document


def _feature(document: _Document, source: str, base_dir: Path) -> Feature:
    table = document.feature
    _check_id(table.id, source, "feature.id")
    seen: dict[str, int] = {}
    services = []
    for i, service in enumerate(document.services):
        _check_id(service.id, source, f"services[{i}].id")
        if service.id in seen:
            raise _error(
                source, f"services[{i}].id", f"{service.id!r} repeats services[{seen[service.id]}]"
            )
        seen[service.id] = i
        for j, dependency in enumerate(service.dependencies):
            if not dependency:
                raise _error(source, f"services[{i}].dependencies[{j}]", "must not be empty")
        port = service.port if service.port is not None else table.ports.get(service.id)
        entrypoint = _entrypoint(service.entrypoint, base_dir)
        services.append(msgspec.structs.replace(service, port=port, entrypoint=entrypoint))
    return Feature(
        id=table.id,
        name=table.name or table.id,
        ports=dict(table.ports),
        services=tuple(services),
        source=source,
    )


def _entrypoint(raw: str | None, base_dir: Path) -> str | None:
    if raw is None or not raw.strip():
        return None
    path = Path(raw).expanduser()
    return os.path.normpath(path if path.is_absolute() else Path(base_dir).absolute() / path)


def _check_id(value: str, source: str, field: str) -> None:
    if not _ID.fullmatch(value):
        raise _error(source, field, f"{value!r} {_ID_RULE}")


def _check_keys(table: Mapping[Any, Any], known: tuple[str, ...], source: str, at: str) -> None:
    """Tolerate foreign keys, but not ones that look like a misspelt known key."""
    folded = {_fold(k): k for k in known}
    for key in table:
        if not isinstance(key, str):
            raise _error(source, f"{at}{key!r}", "keys must be strings")
        if key in known:
            continue
        match = folded.get(_fold(key)) or next(
            iter(difflib.get_close_matches(key, known, n=1, cutoff=0.8)), None
        )
        if match is not None:
            raise _error(source, f"{at}{key}", f"unknown key; did you mean {match!r}?")


def _check_ports(ports: Any, source: str) -> None:
    """Name the port (``feature.ports.api``): msgspec says only ``feature.ports[...]``."""
    if not isinstance(ports, Mapping):
        return  # msgspec reports the wrong type of the table itself
    for name, port in ports.items():
        if not isinstance(name, str):
            raise _error(source, f"feature.ports.{name!r}", "port names must be strings")
        try:
            msgspec.convert(port, Port)
        except msgspec.ValidationError as exc:
            raise _error(source, f"feature.ports.{name}", str(exc).replace("`", "")) from None


def _fold(key: str) -> str:
    return key.replace("_", "").replace("-", "").lower()


def _check_size(data: Any, source: str) -> None:
    """Count nodes as a reader expands them; a YAML alias bomb is rejected, not walked."""
    budget = SERVICES_FILE_MAX_NODES
    stack = [data]
    while stack:
        node = stack.pop()
        budget -= 1
        if budget < 0:
            raise _error(source, None, f"expands to more than {SERVICES_FILE_MAX_NODES} nodes")
        if isinstance(node, Mapping):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _validation_error(exc: msgspec.ValidationError, data: Any, source: str) -> ConfigError:
    """msgspec says ``Expected `int`, got `str` - at `$.services[0].port```: name the field."""
    message, _, path = str(exc).partition(" - at `$")
    field = path.rstrip("`").lstrip(".") or None
    missing = re.fullmatch(r"Object missing required field `(.+)`", message)
    if missing:
        field = f"{field}.{missing.group(1)}" if field else missing.group(1)
        message = "is required"
    # "int | null": null stands for an omitted optional key, which is not what went wrong.
    problem = message.replace("`", "").replace(" | null", "")
    return _error(source, field, _with_service_id(problem, field, data))


def _with_service_id(problem: str, field: str | None, data: Any) -> str:
    """Add the service's id to a ``services[i]...`` error when the entry has one."""
    found = re.match(r"services\[(\d+)\]", field or "")
    services = data.get("services") if isinstance(data, Mapping) else None
    if not found or not isinstance(services, list):
        return problem
    entry = services[int(found.group(1))]
    service_id = entry.get("id") if isinstance(entry, Mapping) else None
    return f"{problem} (service {service_id!r})" if isinstance(service_id, str) else problem


def _error(source: str, field: str | None, problem: str) -> ConfigError:
    where = f"{source}: {field}" if field else source
    return ConfigError(f"{where}: {problem}", file=source, field=field)
