"""What ``mlsup status``, ``leases`` and ``load`` show: pure functions from rows to renderables.

Rows come in JSON-shaped (mappings of plain values: what ``--json`` prints), so these functions
are tested without a supervisor and keep working when the proxy returns typed rows:
:func:`plain_rows` is the one place a row is turned into a mapping. Colour is rich's business:
it is dropped when the output is not a terminal, or when ``NO_COLOR`` is set.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

__all__ = [
    "LoadOutcome",
    "LoadView",
    "leases_table",
    "load_line",
    "load_view",
    "plain_rows",
    "status_table",
]

Row = Mapping[str, Any]

#: How each model state is coloured (states not listed keep the default colour).
STATE_STYLES = {
    "ready": "bold green",
    "starting": "yellow",
    "leasing": "yellow",
    "draining": "magenta",
    "backoff": "red",
    "failed": "bold red",
    "unloaded": "dim",
}


def plain_rows(rows: Iterable[Any]) -> list[dict[str, Any]]:
    """Rows as JSON-shaped dicts, whether the proxy gave mappings or typed structures."""
    plain = []
    for row in rows:
        if isinstance(row, Mapping):
            plain.append(dict(row))
        else:
            import msgspec

            plain.append(msgspec.to_builtins(row))
    return plain


def _cell(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _size(nbytes: int) -> str:
    """A byte count for people: ``512 B``, ``3.0 KiB``, ``12.5 MiB``, ``1.2 GiB``."""
    if nbytes < 1 << 10:
        return f"{nbytes} B"
    for unit, shift in (("KiB", 10), ("MiB", 20), ("GiB", 30)):
        if nbytes < 1 << (shift + 10) or unit == "GiB":
            return f"{nbytes / (1 << shift):.1f} {unit}"
    raise AssertionError("unreachable")


def _bytes_note(row: Row) -> str:
    read, total = row.get("bytes_read"), row.get("bytes_total")
    if not isinstance(read, int) or not isinstance(total, int) or total <= 0:
        return ""
    return f"{_size(read)} of {_size(total)}"


def _status_note(row: Row) -> str:
    """What a person most needs to know beyond the columns: why it failed, what it is doing."""
    error = row.get("error")
    if row.get("state") == "failed" and isinstance(error, Mapping) and error.get("message"):
        return str(error["message"])
    if row.get("state") == "starting" and row.get("stage"):
        loaded = _bytes_note(row)
        return f"{row['stage']} ({loaded})" if loaded else str(row["stage"])
    return _cell(row.get("reason"))


def status_table(rows: Iterable[Row]) -> RenderableType:
    """``mlsup status``: one line per model of the manifest."""
    rows = list(rows)
    if not rows:
        return Text("no models in the manifest")
    table = Table(box=None, header_style="bold", pad_edge=False)
    for heading in ("MODEL", "STATE", "PID", "GPU", "LEASED MB", "MEASURED MB"):
        table.add_column(heading, justify="right" if heading.endswith("MB") else "left")
    for heading in ("RESTARTS", "IDLE S", "REQUESTS"):
        table.add_column(heading, justify="right")
    table.add_column("NOTE", overflow="fold")
    for row in rows:
        state = str(row.get("state", ""))
        table.add_row(
            str(row.get("model", "")),
            Text(state, style=STATE_STYLES.get(state, "")),
            _cell(row.get("pid")),
            _cell(row.get("gpu")),
            _cell(row.get("leased_mb")),
            _cell(row.get("measured_mb")),
            _cell(row.get("restarts")),
            _cell(row.get("idle_s")),
            _cell(row.get("requests")),
            _status_note(row),
        )
    return table


def _gpu_summary(rows: list[Row]) -> Text:
    capacity: dict[int, int] = {}
    used: dict[int, int] = {}
    for row in rows:
        gpu = int(row["gpu"])
        if isinstance(row.get("capacity_mb"), int):
            capacity[gpu] = row["capacity_mb"]
        used[gpu] = used.get(gpu, 0) + int(row.get("vram_mb") or 0)
    parts = [
        f"GPU {gpu}: {used[gpu]} of {capacity[gpu]} MB leased"
        if gpu in capacity
        else f"GPU {gpu}: {used[gpu]} MB leased"
        for gpu in sorted(used)
    ]
    return Text("; ".join(parts), style="dim")


def leases_table(rows: Iterable[Row]) -> RenderableType:
    """``mlsup leases``: every live lease, from every process sharing the GPUs."""
    rows = list(rows)
    if not rows:
        return Text("no leases")
    table = Table(box=None, header_style="bold", pad_edge=False)
    for heading in ("GPU", "LEASE", "MODEL", "MB", "PRIORITY", "PID", "HOST", "AGE S", "NOTE"):
        table.add_column(heading, justify="right" if heading in ("MB", "AGE S") else "left")
    for row in rows:
        preempt = row.get("preempt_in_s")
        note = (
            Text(f"asked to yield; revoked in {preempt:.1f} s", style="yellow")
            if isinstance(preempt, int | float)
            else Text("-")
        )
        age = row.get("age_s")
        table.add_row(
            _cell(row.get("gpu")),
            _cell(row.get("id")),
            _cell(row.get("model_id")),
            _cell(row.get("vram_mb")),
            _cell(row.get("priority")),
            _cell(row.get("pid")),
            _cell(row.get("host")),
            f"{age:.1f}" if isinstance(age, int | float) else "-",
            note,
        )
    return Group(table, _gpu_summary(rows))


class LoadOutcome(enum.Enum):
    """Where ``mlsup load`` stands after looking at a model's row."""

    WAITING = "waiting"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class LoadView:
    """What the progress display shows for one look at the model's row."""

    outcome: LoadOutcome
    description: str  #: state and stage, or the final word
    completed: int | None  #: bytes of the model's files loaded, when known
    total: int | None  #: bytes of the model's files, when known


def load_view(row: Row) -> LoadView:
    """The progress of loading the model of ``row``."""
    model, state = row.get("model", "?"), str(row.get("state", ""))
    total = row.get("bytes_total") if isinstance(row.get("bytes_total"), int) else None
    completed = row.get("bytes_read") if isinstance(row.get("bytes_read"), int) else None
    if state == "ready":
        where = f"{_cell(row.get('leased_mb'))} MB on GPU {_cell(row.get('gpu'))}"
        ready = f"{model} is ready: pid {_cell(row.get('pid'))}, {where}"
        return LoadView(LoadOutcome.READY, ready, None, None)
    if state in ("unloaded", "failed"):
        error = row.get("error")
        message = error.get("message") if isinstance(error, Mapping) else None
        why = message or row.get("reason") or state
        return LoadView(LoadOutcome.FAILED, f"{model} did not load: {why}", None, None)
    stage = str(row.get("stage") or "")
    if state == "leasing":
        stage = stage or "waiting for VRAM"
    elif state == "backoff":
        stage = f"respawning after a crash ({_cell(row.get('last_exit'))})"
    description = f"{model}: {state} {stage}".strip()
    return LoadView(LoadOutcome.WAITING, description, completed, total)


def load_line(view: LoadView, elapsed_s: float) -> str:
    """One line of ``mlsup load``'s progress when the output is not a terminal."""
    line = f"[{elapsed_s:6.1f} s] {view.description}"
    if view.outcome is LoadOutcome.WAITING and view.total and view.completed is not None:
        line += f" ({_size(view.completed)} of {_size(view.total)})"
    return line
