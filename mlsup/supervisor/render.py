"""What ``mlsup status``, ``leases`` and ``load`` show: pure functions from rows to renderables.

Rows come in JSON-shaped (mappings of plain values: what ``--json`` prints), so these functions
are tested without a supervisor and keep working when the proxy returns typed rows:
:func:`plain_rows` is the one place a row is turned into a mapping. Colour is rich's business:
it is dropped when the output is not a terminal, or when ``NO_COLOR`` is set.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

__all__ = [
    "LEASE_COLUMNS",
    "STATUS_COLUMNS",
    "Column",
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


@dataclass(frozen=True)
class Column:
    """One column of a listing: its heading, what a row shows in it, and its alignment."""

    heading: str
    show: Callable[[Row], str | Text]
    numeric: bool = False


def _field(heading: str, key: str, numeric: bool = False) -> Column:
    """A column showing the row's ``key`` as it is (``-`` when absent)."""
    return Column(heading, lambda row: _cell(row.get(key)), numeric)


def _table(columns: Sequence[Column], rows: list[Row]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(
            column.heading, justify="right" if column.numeric else "left", overflow="fold"
        )
    for row in rows:
        table.add_row(*(column.show(row) for column in columns))
    return table


def _state(row: Row) -> Text:
    state = str(row.get("state", ""))
    return Text(state, style=STATE_STYLES.get(state, ""))


def _one_decimal(key: str) -> Callable[[Row], str]:
    def show(row: Row) -> str:
        value = row.get(key)
        return f"{value:.1f}" if isinstance(value, int | float) else "-"

    return show


def _lease_note(row: Row) -> Text:
    preempt = row.get("preempt_in_s")
    if isinstance(preempt, int | float):
        return Text(f"asked to yield; revoked in {preempt:.1f} s", style="yellow")
    return Text("-")


STATUS_COLUMNS = (
    _field("MODEL", "model"),
    Column("STATE", _state),
    _field("PID", "pid"),
    _field("GPU", "gpu"),
    _field("LEASED MB", "leased_mb", numeric=True),
    _field("MEASURED MB", "measured_mb", numeric=True),
    _field("RESTARTS", "restarts", numeric=True),
    Column("IDLE S", _one_decimal("idle_s"), numeric=True),
    _field("REQUESTS", "requests", numeric=True),
    Column("NOTE", _status_note),
)

LEASE_COLUMNS = (
    _field("GPU", "gpu"),
    _field("LEASE", "id"),
    _field("MODEL", "model_id"),
    _field("MB", "vram_mb", numeric=True),
    _field("PRIORITY", "priority"),
    _field("PID", "pid"),
    _field("HOST", "host"),
    Column("AGE S", _one_decimal("age_s"), numeric=True),
    Column("NOTE", _lease_note),
)


def status_table(rows: Iterable[Row]) -> RenderableType:
    """``mlsup status``: one line per model of the manifest."""
    rows = list(rows)
    if not rows:
        return Text("no models in the manifest")
    return _table(STATUS_COLUMNS, rows)


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
    return Group(_table(LEASE_COLUMNS, rows), _gpu_summary(rows))


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
