"""What a supervisor runs with: the manifest, where Redis is, and its files in the runtime dir."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from mlsup import defaults
from mlsup.errors import ConfigError
from mlsup.kit.manifest import CONFIG_ENV, Manifest, load_manifest
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


@dataclass(frozen=True)
class SupervisorSettings:
    """The ``[supervisor]`` table: timings of the worker lifecycle (defaults.py documents each)."""

    restart_backoff_initial_s: float = defaults.RESTART_BACKOFF_INITIAL_S
    restart_backoff_factor: float = defaults.RESTART_BACKOFF_FACTOR
    restart_backoff_max_s: float = defaults.RESTART_BACKOFF_MAX_S
    restart_max_crashes: int = defaults.RESTART_MAX_CRASHES
    restart_window_s: float = defaults.RESTART_WINDOW_S
    terminate_grace_s: float = defaults.TERMINATE_GRACE_S
    heartbeat_s: float = defaults.HEARTBEAT_INTERVAL_S
    load_stall_timeout_s: float = defaults.LOAD_STALL_TIMEOUT_S
    lease_acquire_timeout_s: float = defaults.LEASE_ACQUIRE_TIMEOUT_S

    @classmethod
    def parse(cls, table: Mapping[str, Any], source: str) -> SupervisorSettings:
        """Validate the table; ConfigError naming the file and the field otherwise."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in table.items():
            spec = known.get(key)
            if spec is None:
                raise ConfigError(
                    f"{source}: [supervisor] has no setting {key!r}; known: {', '.join(known)}",
                    file=source,
                    field=f"supervisor.{key}",
                )
            integral = spec.type == "int"
            valid = isinstance(value, int) if integral else isinstance(value, (int, float))
            if isinstance(value, bool) or not valid or value < 0:
                kind = "a non-negative integer" if integral else "a non-negative number"
                raise ConfigError(
                    f"{source}: [supervisor] {key} must be {kind}, not {value!r}",
                    file=source,
                    field=f"supervisor.{key}",
                )
            values[key] = value
        return cls(**values)


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
