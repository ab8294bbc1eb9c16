"""What a supervisor runs with: the manifest, where Redis is, and its files in the runtime dir."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import msgspec

from mlsup import defaults
from mlsup.kit.manifest import CONFIG_ENV, Manifest, load_manifest
from mlsup.kit.manifest_schema import validate
from mlsup.kit.redis_url import ENV_REDIS_URL
from mlsup.runtime import CONTROL_SOCKET, ensure_runtime_dir, runtime_dir

__all__ = [
    "DEFAULT_CONFIG",
    "RuntimePaths",
    "SupervisorConfig",
    "SupervisorSettings",
    "resolve_config_path",
]

#: Read when neither ``--config`` nor ``$MLSUP_CONFIG`` names a file.
DEFAULT_CONFIG = "mlsup.toml"


@dataclass(frozen=True)
class RuntimePaths:
    """The supervisor's files inside the runtime directory."""

    root: Path

    @property
    def control(self) -> Path:
        return self.root / CONTROL_SOCKET

    @property
    def lock(self) -> Path:
        return self.root / "supervisor.lock"

    @property
    def state(self) -> Path:
        return self.root / "supervisor.state.json"

    @property
    def log(self) -> Path:
        return self.root / "supervisor.log"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def worker_log(self, model_id: str) -> Path:
        return self.logs / f"{model_id}.log"

    def worker_socket(self, model_id: str, generation: int) -> Path:
        return self.root / f"w-{model_id}-{generation}.sock"

    @classmethod
    def current(cls) -> RuntimePaths:
        return cls(runtime_dir())


def resolve_config_path(explicit: str | os.PathLike[str] | None) -> Path:
    """``--config``, else ``$MLSUP_CONFIG``, else ``./mlsup.toml``."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    return Path(DEFAULT_CONFIG)


_Seconds = Annotated[float, msgspec.Meta(ge=0)]
_Count = Annotated[int, msgspec.Meta(ge=0)]


class SupervisorSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The ``[supervisor]`` table: timings of the worker lifecycle (defaults.py documents each)."""

    restart_backoff_initial_s: _Seconds = defaults.RESTART_BACKOFF_INITIAL_S
    restart_backoff_factor: Annotated[float, msgspec.Meta(ge=1)] = defaults.RESTART_BACKOFF_FACTOR
    restart_backoff_max_s: _Seconds = defaults.RESTART_BACKOFF_MAX_S
    restart_max_crashes: _Count = defaults.RESTART_MAX_CRASHES
    restart_window_s: _Seconds = defaults.RESTART_WINDOW_S
    terminate_grace_s: _Seconds = defaults.TERMINATE_GRACE_S
    heartbeat_s: Annotated[float, msgspec.Meta(gt=0)] = defaults.HEARTBEAT_INTERVAL_S
    load_stall_timeout_s: _Seconds = defaults.LOAD_STALL_TIMEOUT_S
    lease_acquire_timeout_s: _Seconds = defaults.LEASE_ACQUIRE_TIMEOUT_S

    @classmethod
    def parse(cls, table: Mapping[str, Any], source: str) -> SupervisorSettings:
        """Validate the table; ConfigError naming the file and the field otherwise."""
        return validate(table, cls, source, None, table="supervisor", must=_MUST)


#: What each setting must be, for the error that names it.
_MUST = {
    name: "must be a non-negative integer"
    if name.endswith("crashes")
    else "must be a non-negative number"
    for name in SupervisorSettings.__struct_fields__
} | {
    "restart_backoff_factor": "must be a number ≥ 1",
    "heartbeat_s": "must be a positive number (seconds)",
}


@dataclass(frozen=True)
class SupervisorConfig:
    """The manifest plus what the supervisor derives from it and the environment."""

    manifest: Manifest
    paths: RuntimePaths
    redis_url: str | None  #: None: start an embedded Redis
    devices: list[dict[str, Any]]
    settings: SupervisorSettings = field(default_factory=SupervisorSettings)

    @classmethod
    def load(cls, config: str | os.PathLike[str] | None = None) -> SupervisorConfig:
        """Read the configuration; a missing default file means an empty manifest."""
        path = resolve_config_path(config)
        if path.exists() or config or os.environ.get(CONFIG_ENV):
            manifest = load_manifest(path)  # an explicitly named file must exist
        else:
            manifest = Manifest(source=str(path), models_dir=Path.cwd())
        paths = RuntimePaths(ensure_runtime_dir())
        url = manifest.redis.url or os.environ.get(ENV_REDIS_URL) or None
        settings = SupervisorSettings.parse(manifest.supervisor, manifest.source)
        return cls(manifest, paths, url, _devices(manifest), settings)


def _devices(manifest: Manifest) -> list[dict[str, Any]]:
    if manifest.devices:
        return [dict(device) for device in manifest.devices]
    from mlsup.kit.devices import cpu_budget_devices, discover_nvml

    if discover_nvml():
        return []  # the boss discovers them itself
    return cpu_budget_devices()
