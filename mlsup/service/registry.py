"""The service registry: every feature's ``services.yaml`` under one root, and service addresses.

The seed document's Pattern 4 finds a runner's port through a registry::

    registry = Registry.load_all()                     # $MLSUP_SERVICES_ROOT, else mlsup.toml's
    registry.url("knowledge-verification", "ml-runner")   # 'http://127.0.0.1:41234'

The root is searched recursively for ``services.yaml`` files, skipping what is never a feature's
own tree (virtualenvs, ``node_modules``, version-control and tool caches); two files declaring the
same feature id are an error naming both. ``mlsup services`` lists and checks the registry.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType

from mlsup.defaults import SERVICE_HOST, SERVICES_FILE_NAME
from mlsup.errors import ConfigError, ServiceNotFound
from mlsup.service.services_file import Feature, Service, load_services_file

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "SERVICES_ROOT_ENV",
    "Feature",
    "Registry",
    "Service",
    "find_services_files",
    "services_root",
]

#: Environment variable naming the directory searched for ``services.yaml`` files.
SERVICES_ROOT_ENV = "MLSUP_SERVICES_ROOT"
#: Key of ``mlsup.toml`` (top level) naming the same directory.
SERVICES_ROOT_KEY = "services_root"

# Directories that never hold a feature's own services.yaml, only copies inside dependencies
# or tool state: searching them would be slow and would find other packages' files.
_SKIPPED_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        ".venv",
        "venv",
        "node_modules",
        "__pycache__",
        ".tox",
        ".nox",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
    }
)


class Registry:
    """Features by id, read from ``services.yaml`` files; answers service ports and URLs."""

    def __init__(self, features: Iterable[Feature], *, root: str | None = None) -> None:
        by_id: dict[str, Feature] = {}
        for feature in features:
            other = by_id.get(feature.id)
            if other is not None:
                raise ConfigError(
                    f"feature {feature.id!r} is declared twice: in {other.source} "
                    f"and in {feature.source}; feature ids must be unique under the root",
                    feature=feature.id,
                    file=feature.source,
                    other_file=other.source,
                )
            by_id[feature.id] = feature
        #: Feature id -> feature, in the order the files were found.
        self.features: Mapping[str, Feature] = MappingProxyType(by_id)
        #: The directory searched, when the registry was loaded from one.
        self.root = root

    @classmethod
    def load_all(cls, root: str | os.PathLike[str] | None = None) -> Registry:
        """Every ``services.yaml`` under ``root`` (default: :func:`services_root`)."""
        directory = Path(root).expanduser() if root is not None else services_root()
        files = find_services_files(directory)
        return cls((load_services_file(f) for f in files), root=str(directory))

    @classmethod
    def load_nearest(cls, start: str | os.PathLike[str] | None = None) -> Registry:
        """The ``services.yaml`` in ``start`` (default: the working directory) or its nearest
        parent: what a runner started from its entrypoint declares about itself, read without
        searching (or depending on) every other feature under the root."""
        here = Path(start if start is not None else Path.cwd()).absolute()
        for directory in (here, *here.parents):
            candidate = directory / SERVICES_FILE_NAME
            if candidate.is_file():
                return cls([load_services_file(candidate)], root=str(directory))
        raise ConfigError(
            f"no {SERVICES_FILE_NAME} in {here} or any directory above it",
            root=str(here),
        )

    def get(self, feature_id: str) -> Feature:
        """The feature of that id; ServiceNotFound listing the known ids otherwise."""
        try:
            return self.features[feature_id]
        except KeyError:
            known = ", ".join(sorted(self.features)) or "none"
            raise ServiceNotFound(
                f"no feature {feature_id!r} in the services registry{self._where()}; "
                f"known features: {known}",
                feature=feature_id,
                root=self.root,
            ) from None

    def service(self, feature_id: str, service_id: str) -> Service:
        """The service ``service_id`` of ``feature_id``; ServiceNotFound otherwise."""
        feature = self.get(feature_id)
        service = feature.service(service_id)
        if service is None:
            known = ", ".join(s.id for s in feature.services) or "none"
            raise ServiceNotFound(
                f"feature {feature_id!r} ({feature.source}) has no service {service_id!r}; "
                f"its services: {known}",
                feature=feature_id,
                service=service_id,
                file=feature.source,
            )
        return service

    def port(self, feature_id: str, service_id: str) -> int:
        """The port the service listens on; ConfigError when its file declares none."""
        service = self.service(feature_id, service_id)
        if service.port is None:
            source = self.features[feature_id].source
            raise ConfigError(
                f"{source}: service {service_id!r} declares no port (give it port: or "
                f"feature.ports.{service_id})",
                feature=feature_id,
                service=service_id,
                file=source,
            )
        return service.port

    def url(self, feature_id: str, service_id: str) -> str:
        """``http://127.0.0.1:<port>``: where the service answers on this host."""
        return f"http://{SERVICE_HOST}:{self.port(feature_id, service_id)}"

    def services(self) -> Iterator[tuple[Feature, Service]]:
        """Every (feature, service) pair, features in registry order."""
        for feature in self.features.values():
            for service in feature.services:
                yield feature, service

    def _where(self) -> str:
        return f" under {self.root}" if self.root else ""

    def __repr__(self) -> str:
        return f"Registry(root={self.root!r}, features={sorted(self.features)!r})"


def find_services_files(root: str | os.PathLike[str]) -> list[Path]:
    """Every ``services.yaml`` under ``root`` (or ``root`` itself when it is one), sorted.

    Skips virtualenvs (``.venv``, ``venv``, any directory holding ``pyvenv.cfg``),
    ``node_modules``, version-control directories and tool caches; does not follow symlinked
    directories (no loops).
    """
    top = Path(root)
    if top.is_file():
        return [top]
    if not top.is_dir():
        raise ConfigError(
            f"services root {top} is not a directory; set {SERVICES_ROOT_ENV} or "
            f"{SERVICES_ROOT_KEY} in mlsup.toml to the directory holding your features",
            root=str(top),
        )
    found: list[Path] = []

    def unreadable(exc: OSError) -> None:
        if exc.filename is not None and Path(exc.filename) == top:
            raise ConfigError(f"cannot read services root {top}: {exc.strerror}", root=str(top))

    for directory, subdirs, files in os.walk(top, onerror=unreadable):
        subdirs[:] = sorted(d for d in subdirs if not _skipped(Path(directory), d))
        if SERVICES_FILE_NAME in files:
            found.append(Path(directory) / SERVICES_FILE_NAME)
    return found


def _skipped(parent: Path, name: str) -> bool:
    return name in _SKIPPED_DIRS or (parent / name / "pyvenv.cfg").exists()


def services_root(config: str | os.PathLike[str] | None = None) -> Path:
    """``$MLSUP_SERVICES_ROOT``, else ``services_root`` of the configuration file.

    The configuration file is the one ``mlsup start`` reads: ``config``, else ``$MLSUP_CONFIG``,
    else ``./mlsup.toml``. A relative ``services_root`` resolves against that file's directory.
    """
    env = os.environ.get(SERVICES_ROOT_ENV)
    if env:
        return Path(env).expanduser()
    from mlsup.supervisor.config import resolve_config_path

    file = resolve_config_path(config)
    hint = (
        f'set {SERVICES_ROOT_ENV}, add {SERVICES_ROOT_KEY} = "~/Code" to mlsup.toml, or pass --root'
    )
    if not file.exists():
        raise ConfigError(f"no services root: {file} does not exist; {hint}", file=str(file))
    value = _configured_root(file)
    if value is None:
        raise ConfigError(
            f"no services root: {file} has no {SERVICES_ROOT_KEY}; {hint}",
            file=str(file),
            field=SERVICES_ROOT_KEY,
        )
    if not isinstance(value, str) or not value:
        raise ConfigError(
            f"{file}: {SERVICES_ROOT_KEY}: must be a directory path string, not {value!r}",
            file=str(file),
            field=SERVICES_ROOT_KEY,
        )
    return file.absolute().parent / Path(value).expanduser()


def _configured_root(file: Path) -> object:
    """The raw ``services_root`` of ``file`` (None when absent).

    The one place the registry reads mlsup.toml: the supervisor's manifest carries the key
    opaquely (``Manifest.services_root``) once its schema names it; this function can then
    become ``load_manifest(file).services_root``.
    """
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror}", file=str(file)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file} is not valid TOML: {exc}", file=str(file)) from exc
    return data.get(SERVICES_ROOT_KEY)
