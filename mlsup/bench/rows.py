"""Benchmark result rows, machine information, and their table and JSON forms."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["Row", "format_table", "machine_info", "percentile", "write_json"]


@dataclass(frozen=True)
class Row:
    """One measurement and the baseline it is judged against.

    ``ratio`` is ``value / baseline_value``: for latencies lower is better, for throughputs
    (unit ending in ``/s``) higher is better. ``target`` states the goal in words, and
    ``met`` whether this run reached it (None where no target applies).
    """

    suite: str
    name: str
    unit: str
    value: float
    baseline: str | None = None
    baseline_value: float | None = None
    target: str | None = None
    met: bool | None = None

    @property
    def ratio(self) -> float | None:
        if self.baseline_value in (None, 0):
            return None
        assert self.baseline_value is not None
        return self.value / self.baseline_value

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = self.ratio
        return data


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of samples, by linear interpolation."""
    if not samples:
        raise ValueError("no samples")
    if len(samples) == 1:
        return samples[0]
    cuts = statistics.quantiles(samples, n=1000, method="inclusive")
    index = min(len(cuts) - 1, max(0, round(q * 10) - 1))
    return cuts[index]


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpus() -> list[dict[str, Any]]:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver, no library: no GPU to report
        return []
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(
                {
                    "index": index,
                    "name": pynvml.nvmlDeviceGetName(handle),
                    "memory_mb": int(memory.total) // (1 << 20),
                }
            )
        return gpus
    finally:
        pynvml.nvmlShutdown()


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, memory, GPUs, versions."""
    import psutil

    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / (1 << 30), 1),
        "gpus": _gpus(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": {
            name: _version(name)
            for name in ("mlsup", "pyzmq", "msgpack", "numpy", "redis", "torch", "llama_cpp_python")
        },
    }


def format_table(rows: Iterable[Row]) -> str:
    """Rows as an aligned text table for people."""
    header = ("suite", "name", "value", "unit", "baseline", "ratio", "target")
    lines = [header]
    for row in rows:
        ratio = row.ratio
        target = "" if row.target is None else f"{row.target} {'ok' if row.met else 'MISSED'}"
        lines.append(
            (
                row.suite,
                row.name,
                f"{row.value:.4g}",
                row.unit,
                "" if row.baseline_value is None else f"{row.baseline} {row.baseline_value:.4g}",
                "" if ratio is None else f"{ratio:.2f}x",
                target,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def write_json(path: Path, rows: Sequence[Row], machine: dict[str, Any]) -> None:
    """Write ``{"machine": ..., "rows": [...]}`` to path (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine, "rows": [row.to_json() for row in rows]}
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
