"""Benchmark result rows, machine information, and their table and JSON forms."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Any

from mlsup.errors import BenchmarkError

__all__ = [
    "Row",
    "format_table",
    "gpu_count",
    "machine_info",
    "not_run",
    "percentile",
    "write_json",
]


@dataclass(frozen=True)
class Row:
    """One measurement and the baseline it is judged against.

    ``ratio`` is ``value / baseline_value``: for latencies lower is better, for throughputs
    (unit ending in ``/s``) higher is better. ``target`` states the goal in words, and
    ``met`` whether this run reached it (None where no target applies). ``value`` is None
    for a row that was not run (``note`` says why, e.g. "not run: no GPU"); ``note`` also
    carries the measured reason when a target is missed. ``samples`` and
    ``baseline_samples`` (seconds or the row's unit) feed the report's distribution charts;
    they stay out of the JSON.
    """

    suite: str
    name: str
    unit: str
    value: float | None
    baseline: str | None = None
    baseline_value: float | None = None
    target: str | None = None
    met: bool | None = None
    note: str | None = None
    samples: tuple[float, ...] = field(default=(), repr=False, compare=False)
    baseline_samples: tuple[float, ...] = field(default=(), repr=False, compare=False)

    @property
    def ratio(self) -> float | None:
        """``value / baseline_value``, or None when either is missing (or the baseline is 0)."""
        if self.value is None or not self.baseline_value:
            return None
        return self.value / self.baseline_value

    def to_json(self) -> dict[str, Any]:
        """The row as plain data: every field but the samples, plus ``ratio``."""
        data = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("samples", "baseline_samples")
        }
        data["ratio"] = self.ratio
        return data


def not_run(suite: str, name: str, unit: str, why: str) -> Row:
    """A row that could not be measured on this machine, saying why."""
    return Row(suite, name, unit, None, note=f"not run: {why}")


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of samples, by linear interpolation."""
    if not samples:
        raise BenchmarkError("no samples to take a percentile of")
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


def gpu_count() -> int:
    """How many GPUs NVML finds (0 without a driver)."""
    return len(_gpus())


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
        if row.value is None:
            target = row.note or "not run"
        lines.append(
            (
                row.suite,
                row.name,
                "-" if row.value is None else f"{row.value:.4g}",
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
