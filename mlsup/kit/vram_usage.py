"""How much VRAM each process uses: the seam lease enforcement reads through.

In production :class:`NvmlUsage` asks NVML (every GPU's compute processes). On machines without
a GPU the supervisor's simulated devices have no such reading; a test hands it one through
``$MLSUP_FAKE_VRAM`` (a JSON file ``{"<pid>": MB}`` read by
:class:`mlsup.testing.vram.FileVramUsage`), the way the probe loader is named in
``$MLSUP_LOADERS``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Protocol

from mlsup.errors import DeviceError
from mlsup.kit.devices import discover_nvml

__all__ = ["FAKE_VRAM_ENV", "NvmlUsage", "VramUsage", "vram_usage"]

#: A JSON file of per-process VRAM readings, for machines without a GPU (tests).
FAKE_VRAM_ENV = "MLSUP_FAKE_VRAM"


class VramUsage(Protocol):
    """A reading of the VRAM each process uses."""

    def read(self) -> Mapping[int, int]:
        """MB of VRAM in use by pid, summed over every GPU; processes using none are absent."""


class NvmlUsage:
    """The reading NVML gives (empty without a driver)."""

    def read(self) -> Mapping[int, int]:
        used: dict[int, int] = {}
        try:
            devices = discover_nvml() or []
        except DeviceError:
            return used  # a driver hiccup: no reading this time, no enforcement on a guess
        for device in devices:
            for process in device.processes:
                used[process.pid] = used.get(process.pid, 0) + process.used_mb
        return used


def vram_usage() -> VramUsage:
    """The reading to enforce leases with: the fake one a test named, else NVML."""
    path = os.environ.get(FAKE_VRAM_ENV)
    if path:
        from mlsup.testing.vram import FileVramUsage

        return FileVramUsage(path)
    return NvmlUsage()
