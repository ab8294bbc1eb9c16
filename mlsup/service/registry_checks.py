"""What ``mlsup services check`` decides: pure functions over a registry and what was observed.

The host is observed elsewhere (:mod:`mlsup.service.registry_probe`); here only decisions live,
so each rule is tested with plain data:

- **duplicate-port**: one port claimed by two services or named ports (any features).
- **port-mismatch**: a service's ``port`` differs from ``feature.ports[<service id>]``.
- **port-taken**: something listens on a service's port and it is not the service. The rule:
  a listener whose process can be inspected *is* the service when its working directory is the
  service's entrypoint or inside it, or its command line names a path that is (this is what a
  ``startCommand`` run from the entrypoint looks like). When the process cannot be inspected
  (another user's) or the service declares no entrypoint, the port is the service's only if its
  ``GET /health`` answers as a service does (200 or 503 with a JSON ``status``).
- **missing-entrypoint**: a service declares no entrypoint, or one that does not exist.
- **unknown-dependency**: a dependency names neither ``<feature>.<service>`` (or a named port,
  ``<feature>.<ports key>``) of the registry nor known infrastructure (``infrastructure.redis``).
"""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from mlsup.defaults import KNOWN_INFRASTRUCTURE
from mlsup.service.registry import Registry
from mlsup.service.services_file import Service

__all__ = [
    "Health",
    "HealthReport",
    "Listener",
    "Observation",
    "Problem",
    "ProblemKind",
    "check",
    "classify_health",
    "duplicate_ports",
    "missing_entrypoints",
    "port_mismatches",
    "ports_taken",
    "unknown_dependencies",
]


#: Most characters of a listener's command line quoted in a problem.
_COMMAND_CHARS = 160


class Health(enum.Enum):
    """What a service's ``GET /health`` said."""

    OK = "ok"
    LOADING = "loading"
    DOWN = "down"
    #: It answered, but not as a service's health endpoint does (404, HTML, another status).
    UNEXPECTED = "unexpected"
    #: The service declares no port: nothing to ask.
    NO_PORT = "no port"


@dataclass(frozen=True)
class HealthReport:
    """A health verdict and the fact behind it (``HTTP 404``, ``connection refused``...)."""

    health: Health
    detail: str = ""


@dataclass(frozen=True)
class Listener:
    """A socket listening on a port; ``pid``, ``cwd``, ``cmdline`` are None when not visible."""

    port: int
    pid: int | None = None
    cwd: str | None = None
    cmdline: tuple[str, ...] | None = None

    def describe(self) -> str:
        """``pid 123 (python -m http.server)``, as much as is known."""
        if self.pid is None:
            return "a process this user cannot inspect"
        if not self.cmdline:
            return f"pid {self.pid}"
        # The program's name, not its install path, leaves room for the arguments that tell.
        command = " ".join([os.path.basename(self.cmdline[0]), *self.cmdline[1:]])
        if len(command) > _COMMAND_CHARS:
            command = command[: _COMMAND_CHARS - 3] + "..."
        return f"pid {self.pid} ({command})"


@dataclass(frozen=True)
class Observation:
    """What the host showed: health by port, listeners by port, entrypoints' real paths."""

    health: Mapping[int, HealthReport] = field(default_factory=dict)
    listeners: Mapping[int, tuple[Listener, ...]] = field(default_factory=dict)
    #: Declared entrypoint -> its real path (symlinks resolved), for those that exist.
    entrypoints: Mapping[str, str] = field(default_factory=dict)


class ProblemKind(enum.Enum):
    """The kinds of problem ``mlsup services check`` reports."""

    DUPLICATE_PORT = "duplicate-port"
    PORT_MISMATCH = "port-mismatch"
    PORT_TAKEN = "port-taken"
    MISSING_ENTRYPOINT = "missing-entrypoint"
    UNKNOWN_DEPENDENCY = "unknown-dependency"


@dataclass(frozen=True)
class Problem:
    """One finding: its kind, where (feature, service, port), and a sentence saying what to do."""

    kind: ProblemKind
    feature: str
    message: str
    service: str | None = None
    port: int | None = None


def classify_health(status: int | None, body: bytes = b"", error: str = "") -> HealthReport:
    """The verdict on one ``GET /health``: ``status`` None means no HTTP answer (``error``).

    503 is loading (the service base answers it while its startup runs); 200 with a JSON
    object holding ``status`` is ok, or loading when that status says so; anything else
    answered, but not as a service's health endpoint does.
    """
    if status is None:
        return HealthReport(Health.DOWN, error)
    if status == 503:
        return HealthReport(Health.LOADING, "HTTP 503")
    document = _json_object(body)
    if status == 200 and document is not None and "status" in document:
        if document["status"] == "loading":
            return HealthReport(Health.LOADING, "status loading")
        loaded = document.get("model_loaded")
        detail = "" if not isinstance(loaded, bool) else f"model_loaded={str(loaded).lower()}"
        return HealthReport(Health.OK, detail)
    shape = "" if status != 200 else ", not a health document"
    return HealthReport(Health.UNEXPECTED, f"HTTP {status}{shape}")


def check(registry: Registry, observation: Observation) -> list[Problem]:
    """Every problem, by kind in the order of :class:`ProblemKind`."""
    return [
        *duplicate_ports(registry),
        *port_mismatches(registry),
        *ports_taken(registry, observation),
        *missing_entrypoints(registry, observation),
        *unknown_dependencies(registry),
    ]


def duplicate_ports(registry: Registry) -> list[Problem]:
    """Ports claimed by more than one service or named port, across all features."""
    claims: dict[int, dict[tuple[str, str], str]] = {}
    for feature in registry.features.values():
        for name, port in feature.ports.items():
            claims.setdefault(port, {})[(feature.id, name)] = feature.source
        for service in feature.services:
            if service.port is not None:
                claims.setdefault(service.port, {})[(feature.id, service.id)] = feature.source
    problems = []
    for port, claimants in sorted(claims.items()):
        if len(claimants) > 1:
            names = [f"{f}.{n} ({source})" for (f, n), source in claimants.items()]
            (feature_id, _), *_ = claimants
            message = f"port {port} is declared by {len(names)}: {', '.join(names)}"
            problems.append(Problem(ProblemKind.DUPLICATE_PORT, feature_id, message, port=port))
    return problems


def port_mismatches(registry: Registry) -> list[Problem]:
    """Services whose ``port`` contradicts the feature's ``ports`` entry of the same name."""
    problems = []
    for feature, service in registry.services():
        named = feature.ports.get(service.id)
        if named is not None and service.port is not None and named != service.port:
            message = (
                f"{feature.id}.{service.id} ({feature.source}) has port {service.port} but "
                f"feature.ports.{service.id} is {named}; make them agree"
            )
            problems.append(
                Problem(ProblemKind.PORT_MISMATCH, feature.id, message, service.id, service.port)
            )
    return problems


def ports_taken(registry: Registry, observation: Observation) -> list[Problem]:
    """Services whose port is held by a process that is not the service (see module doc)."""
    problems = []
    for feature, service in registry.services():
        if service.port is None:
            continue
        for listener in observation.listeners.get(service.port, ()):
            reason = _foreign_reason(service, listener, observation)
            if reason is not None:
                message = f"{feature.id}.{service.id}: port {service.port} is taken by {reason}"
                problems.append(
                    Problem(ProblemKind.PORT_TAKEN, feature.id, message, service.id, service.port)
                )
                break
    return problems


def _foreign_reason(service: Service, listener: Listener, observation: Observation) -> str | None:
    """Why ``listener`` is not ``service``; None when it is, or may be."""
    entrypoint = service.entrypoint
    home = observation.entrypoints.get(entrypoint) if entrypoint else None
    inspectable = listener.cwd is not None or listener.cmdline is not None
    if home is not None and inspectable:
        if _runs_from(listener, home) or (entrypoint and _runs_from(listener, entrypoint)):
            return None
        return (
            f"{listener.describe()}, which runs outside the entrypoint {entrypoint} "
            f"(working directory {listener.cwd or 'unknown'})"
        )
    report = observation.health.get(service.port or 0)
    if report is None or report.health in (Health.OK, Health.LOADING):
        return None
    detail = f": {report.detail}" if report.detail else ""
    return (
        f"{listener.describe()}, which does not answer GET /health as a service "
        f"({report.health.value}{detail})"
    )


def _runs_from(listener: Listener, home: str) -> bool:
    """Its working directory, or a path on its command line, is ``home`` or inside it."""
    if listener.cwd is not None and _inside(listener.cwd, home):
        return True
    base = listener.cwd or "/"
    return any(
        _inside(os.path.join(base, arg), home)
        for arg in listener.cmdline or ()
        if os.sep in arg and not arg.startswith("-")
    )


def _inside(path: str, home: str) -> bool:
    path, home = os.path.normpath(path), os.path.normpath(home)
    return path == home or path.startswith(home.rstrip(os.sep) + os.sep)


def missing_entrypoints(registry: Registry, observation: Observation) -> list[Problem]:
    """Services that declare no entrypoint, or one that does not exist on this host."""
    problems = []
    for feature, service in registry.services():
        where = f"{feature.id}.{service.id} ({feature.source})"
        if service.entrypoint is None:
            message = f"{where} declares no entrypoint: the directory its startCommand runs in"
        elif service.entrypoint not in observation.entrypoints:
            message = f"{where}: entrypoint {service.entrypoint} does not exist"
        else:
            continue
        problems.append(Problem(ProblemKind.MISSING_ENTRYPOINT, feature.id, message, service.id))
    return problems


def unknown_dependencies(registry: Registry) -> list[Problem]:
    """Dependencies naming neither a ``<feature>.<service>`` of the registry nor infrastructure."""
    known = set(KNOWN_INFRASTRUCTURE) | {f"{f.id}.{s.id}" for f, s in registry.services()}
    # A named port (feature.ports.api) is an endpoint the feature declares, often a process
    # that is not listed as a service (the seed's TypeScript api): depending on it is sound.
    known |= {f"{f.id}.{name}" for f in registry.features.values() for name in f.ports}
    problems = []
    for feature, service in registry.services():
        for dependency in service.dependencies:
            if dependency not in known:
                message = (
                    f"{feature.id}.{service.id} ({feature.source}) depends on {dependency!r}, "
                    f"which is no known service; write <feature>.<service>, "
                    f"<feature>.<named port> or one of "
                    f"{', '.join(KNOWN_INFRASTRUCTURE)}"
                )
                problems.append(
                    Problem(ProblemKind.UNKNOWN_DEPENDENCY, feature.id, message, service.id)
                )
    return problems


def _json_object(body: bytes) -> dict[str, object] | None:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return document if isinstance(document, dict) else None
