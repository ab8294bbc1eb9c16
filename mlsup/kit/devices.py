"""Device inventory: real GPUs through NVML, else configured simulated GPUs or a CPU budget.

A device's *capacity* is what leases may add up to on it: a real GPU's total memory minus
:data:`~mlsup.defaults.GPU_RESERVE_MB`, or the configured ``memory_mb``. Capacities are then
published in Redis (``gpu:{i}:capacity``) by the lease layer, so that every process agrees.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mlsup import defaults
from mlsup.errors import ConfigError, DeviceError

__all__ = [
    "Device",
    "DeviceKind",
    "ProcessUsage",
    "cpu_budget_devices",
    "discover_nvml",
    "inventory",
    "parse_devices",
]

_CONFIG_FIELDS = {"index", "memory_mb", "simulated", "kind", "name"}


class DeviceKind(enum.Enum):
    """Where leases on a device actually run."""

    #: A real NVIDIA GPU (discovered through NVML, or configured with ``simulated = false``).
    GPU = "gpu"
    #: A configured GPU of a given size that does not exist: its workers run on the CPU.
    SIMULATED = "simulated"
    #: A CPU memory budget, leased like a GPU.
    CPU = "cpu"


@dataclass(frozen=True)
class ProcessUsage:
    """GPU memory one process uses (from NVML)."""

    pid: int
    used_mb: int


@dataclass(frozen=True)
class Device:
    """One leasable device. ``total_mb``/``free_mb``/``processes`` are known for NVML GPUs."""

    index: int
    capacity_mb: int
    kind: DeviceKind = DeviceKind.SIMULATED
    name: str = ""
    total_mb: int | None = None
    free_mb: int | None = None
    processes: tuple[ProcessUsage, ...] = field(default=())


def _config_error(message: str, position: int) -> ConfigError:
    return ConfigError(f"[[devices]] entry {position}: {message}", device=position)


def _parse_one(entry: Mapping[str, Any], position: int) -> Device:
    unknown = set(entry) - _CONFIG_FIELDS
    if unknown:
        names = ", ".join(sorted(unknown))
        raise _config_error(
            f"unknown field(s) {names}; allowed: {sorted(_CONFIG_FIELDS)}", position
        )
    index, memory = entry.get("index"), entry.get("memory_mb")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise _config_error(f"'index' must be an integer >= 0, not {index!r}", position)
    if not isinstance(memory, int) or isinstance(memory, bool) or memory <= 0:
        raise _config_error(f"'memory_mb' must be a positive integer, not {memory!r}", position)
    simulated = entry.get("simulated", True)
    if not isinstance(simulated, bool):
        raise _config_error(f"'simulated' must be true or false, not {simulated!r}", position)
    kind_name = entry.get("kind", "simulated" if simulated else "gpu")
    try:
        kind = DeviceKind(kind_name)
    except ValueError:
        choices = ", ".join(k.value for k in DeviceKind)
        raise _config_error(
            f"'kind' must be one of {choices}, not {kind_name!r}", position
        ) from None
    name = entry.get("name", "")
    if not isinstance(name, str):
        raise _config_error(f"'name' must be a string, not {name!r}", position)
    return Device(index=index, capacity_mb=memory, kind=kind, name=name)


def parse_devices(entries: Iterable[Mapping[str, Any] | Device]) -> list[Device]:
    """Devices from configuration (``[[devices]]`` tables, or :class:`Device` values).

    Raises :class:`ConfigError` naming the entry and field for anything malformed, and for two
    entries with the same index.
    """
    devices: list[Device] = []
    for position, entry in enumerate(entries):
        if isinstance(entry, Device):
            devices.append(entry)
        elif isinstance(entry, Mapping):
            devices.append(_parse_one(entry, position))
        else:
            raise _config_error(f"must be a table, not {type(entry).__name__}", position)
    seen: set[int] = set()
    for device in devices:
        if device.index in seen:
            raise ConfigError(f"[[devices]]: index {device.index} appears twice", gpu=device.index)
        seen.add(device.index)
    return sorted(devices, key=lambda d: d.index)


def discover_nvml(reserve_mb: int = defaults.GPU_RESERVE_MB) -> list[Device] | None:
    """The GPUs NVML sees (None without a driver or library), with their per-process usage.

    Raises :class:`DeviceError` if NVML starts but then fails to describe a device.
    """
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no library, no driver: no NVML
        return None
    try:
        devices = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            total_mb = int(memory.total) >> 20
            processes = tuple(
                ProcessUsage(int(p.pid), int(p.usedGpuMemory or 0) >> 20)
                for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
            )
            devices.append(
                Device(
                    index=index,
                    capacity_mb=max(0, total_mb - reserve_mb),
                    kind=DeviceKind.GPU,
                    name=str(pynvml.nvmlDeviceGetName(handle)),
                    total_mb=total_mb,
                    free_mb=int(memory.free) >> 20,
                    processes=processes,
                )
            )
        return devices
    except pynvml.NVMLError as exc:
        raise DeviceError(f"NVML failed to describe the GPUs: {exc}; check the driver") from exc
    finally:
        pynvml.nvmlShutdown()


def cpu_budget_devices() -> list[dict[str, Any]]:
    """The device of a machine without GPUs and without ``[[devices]]``: device 0, a share of
    host memory (:data:`~mlsup.defaults.CPU_BUDGET_FRACTION`), so that models still queue and
    yield instead of swapping the machine to death. The supervisor and a bare ``GPUBoss()``
    both use this rule, so they publish the same capacity."""
    import psutil

    budget = int(psutil.virtual_memory().total * defaults.CPU_BUDGET_FRACTION) >> 20
    return [{"index": 0, "memory_mb": budget, "kind": "cpu"}]


def inventory(
    config: Iterable[Mapping[str, Any] | Device] | None = None,
    reserve_mb: int = defaults.GPU_RESERVE_MB,
) -> list[Device]:
    """Configured devices if any, else the NVML GPUs, else none (CPU only)."""
    if config is not None:
        return parse_devices(config)
    return discover_nvml(reserve_mb) or []
