"""What the page shows, built from the supervisor's status rows and GPU listing (pure).

:func:`read_row` is the one place that reads a status row; :func:`read_gpu` the one place that
reads an entry of the control plane's ``gpus`` operation. :func:`build_view` joins them into
the :class:`DashboardView` the browser renders: GPU bars split into lease segments (this
supervisor's workers and every other kit process on the machine), waiters, and one line per
model with its badge, the buttons it offers and its activity.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from mlsup.dashboard.activity import ModelActivity

__all__ = [
    "Badge",
    "DashboardView",
    "GpuBar",
    "LeaseSegment",
    "ModelLine",
    "ModelRow",
    "Waiter",
    "badge",
    "build_view",
    "read_gpu",
    "read_row",
]


class Badge(enum.Enum):
    """The state a person reads on a model's badge (fewer than the supervisor's states)."""

    UNLOADED = "unloaded"
    LOADING = "loading"  #: leasing VRAM or starting its worker, at the user's request
    READY = "ready"
    DRAINING = "draining"
    RESTARTING = "restarting"  #: its worker died unexpectedly and is being brought back
    FAILED = "failed"


class ModelRow(msgspec.Struct, frozen=True):
    """The fields of a status row the dashboard uses."""

    model: str
    loader: str
    state: str
    stage: str
    pid: int | None
    gpu: int | None
    leased_mb: int | None
    lease_id: str | None
    measured_mb: int | None
    restarts: int
    requests: int
    generation: int
    idle_s: float | None
    priority: str
    reason: str | None
    error: str | None
    last_exit: str | None
    timeline: dict[str, float]


def read_row(row: Mapping[str, Any]) -> ModelRow:
    """A status row (``proxy.status()``) as a :class:`ModelRow`. When rows become the typed
    ``mlsup.contracts.ModelStatus``, only this function changes."""
    error = row.get("error")
    return ModelRow(
        model=str(row["model"]),
        loader=str(row.get("loader") or ""),
        state=str(row["state"]),
        stage=str(row.get("stage") or ""),
        pid=row.get("pid"),
        gpu=row.get("gpu"),
        leased_mb=row.get("leased_mb"),
        lease_id=row.get("lease_id"),
        measured_mb=row.get("measured_mb"),
        restarts=int(row.get("restarts") or 0),
        requests=int(row.get("requests") or 0),
        generation=int(row.get("generation") or 0),
        idle_s=row.get("idle_s"),
        priority=str(row.get("priority") or ""),
        reason=row.get("reason"),
        error=error.get("message") if isinstance(error, Mapping) else None,
        last_exit=row.get("last_exit"),
        timeline={str(k): float(v) for k, v in (row.get("timeline") or {}).items()},
    )


class LeaseSegment(msgspec.Struct, frozen=True):
    """One live lease, drawn as a segment of its GPU's bar."""

    lease_id: str
    model: str  #: the model id the holder gave (empty if none)
    priority: str
    vram_mb: int
    measured_mb: int | None  #: what the worker measured; None for processes outside mlsup's view
    owner: str
    pid: int  #: the lease holder's (for a supervised model: the supervisor's)
    host: str
    supervised: bool  #: held for one of this supervisor's workers
    worker_pid: int | None  #: the worker serving a supervised model
    preempt_in_s: float | None  #: asked to yield; revoked in this many seconds
    share: float  #: fraction of the GPU's capacity, 0..1


class Waiter(msgspec.Struct, frozen=True):
    """A caller queued for VRAM on a GPU, in service order."""

    id: str
    vram_mb: int
    priority: str


class GpuBar(msgspec.Struct, frozen=True):
    """One GPU: capacity, the segments of its bar, the free remainder, and its queue."""

    gpu: int
    capacity_mb: int
    used_mb: int
    free_mb: int
    free_share: float
    segments: tuple[LeaseSegment, ...]
    waiting: tuple[Waiter, ...]


class ModelLine(msgspec.Struct, frozen=True):
    """One line of the model table."""

    model: str
    loader: str
    state: str  #: the supervisor's own state name
    badge: Badge
    stage: str
    pid: int | None
    gpu: int | None
    leased_mb: int | None
    measured_mb: int | None
    priority: str
    restarts: int
    requests: int
    idle_s: int | None  #: whole seconds, so that the page changes at most once a second
    reason: str | None
    error: str | None
    last_exit: str | None
    can_load: bool
    can_unload: bool
    activity: ModelActivity


class DashboardView(msgspec.Struct, frozen=True):
    """Everything one frame of the page shows."""

    supervisor: str | None  #: the runtime directory it watches
    problem: str | None  #: why the supervisor could not be read (None when it answered)
    models: tuple[ModelLine, ...]
    gpus: tuple[GpuBar, ...]
    window_s: float
    step_s: float


def read_gpu(entry: Mapping[str, Any]) -> tuple[int, int, list[Mapping[str, Any]], list[Waiter]]:
    """An entry of the ``gpus`` control operation: (gpu, capacity MB, lease maps, waiters)."""
    waiting = [
        Waiter(str(w["id"]), int(w["vram_mb"]), str(w["priority"]))
        for w in entry.get("waiting") or ()
    ]
    return int(entry["gpu"]), int(entry["capacity_mb"]), list(entry.get("leases") or ()), waiting


_LIVE = {"leasing", "starting", "backoff"}
#: The stage shown while a model waits for its lease (the supervisor reports stages only once
#: its worker starts).
WAITING_FOR_VRAM = "waiting for a VRAM lease"


def badge(row: ModelRow) -> Badge:
    """The badge of a row: a model coming back after an unexpected worker exit is RESTARTING
    until it is ready again (its timeline shows an exit after its last ready and unload)."""
    if row.state in _LIVE:
        last = row.timeline.get("exited")
        settled = max(row.timeline.get("ready", -1.0), row.timeline.get("unloaded", -1.0))
        if row.state == "backoff" or (last is not None and last > settled):
            return Badge.RESTARTING
        return Badge.LOADING
    return Badge(row.state)


def _segment(lease: Mapping[str, Any], capacity: int, rows: Mapping[str, ModelRow]) -> LeaseSegment:
    row = rows.get(str(lease["id"]))
    vram = int(lease["vram_mb"])
    preempt = lease.get("preempt_in_s")
    return LeaseSegment(
        lease_id=str(lease["id"]),
        model=str(lease.get("model_id") or ""),
        priority=str(lease.get("priority") or ""),
        vram_mb=vram,
        measured_mb=row.measured_mb if row is not None else None,
        owner=str(lease.get("owner") or ""),
        pid=int(lease.get("pid") or 0),
        host=str(lease.get("host") or ""),
        supervised=row is not None,
        worker_pid=row.pid if row is not None else None,
        preempt_in_s=None if preempt is None else round(float(preempt), 1),
        share=vram / capacity if capacity > 0 else 0.0,
    )


def _gpu_bar(entry: Mapping[str, Any], rows: Mapping[str, ModelRow]) -> GpuBar:
    gpu, capacity, leases, waiting = read_gpu(entry)
    segments = tuple(_segment(lease, capacity, rows) for lease in leases)
    used = sum(s.vram_mb for s in segments)
    free = max(capacity - used, 0)
    return GpuBar(
        gpu=gpu,
        capacity_mb=capacity,
        used_mb=used,
        free_mb=free,
        free_share=free / capacity if capacity > 0 else 0.0,
        segments=segments,
        waiting=tuple(waiting),
    )


def _model_line(row: ModelRow, activity: ModelActivity) -> ModelLine:
    shown = badge(row)
    return ModelLine(
        model=row.model,
        loader=row.loader,
        state=row.state,
        badge=shown,
        stage=row.stage or (WAITING_FOR_VRAM if row.state == "leasing" else ""),
        pid=row.pid,
        gpu=row.gpu,
        leased_mb=row.leased_mb,
        measured_mb=row.measured_mb,
        priority=row.priority,
        restarts=row.restarts,
        requests=row.requests,
        idle_s=None if row.idle_s is None else int(row.idle_s),
        reason=row.reason,
        error=row.error,
        last_exit=row.last_exit,
        can_load=shown in (Badge.UNLOADED, Badge.FAILED),
        can_unload=shown not in (Badge.UNLOADED, Badge.FAILED, Badge.DRAINING),
        activity=activity,
    )


def build_view(
    rows: Sequence[ModelRow],
    gpus: Sequence[Mapping[str, Any]],
    activity: Callable[[str], ModelActivity],
    *,
    supervisor: str | None,
    problem: str | None,
    window_s: float,
    step_s: float,
) -> DashboardView:
    """Join status rows, the GPU listing and each model's activity into one page frame."""
    by_lease = {row.lease_id: row for row in rows if row.lease_id}
    return DashboardView(
        supervisor=supervisor,
        problem=problem,
        models=tuple(_model_line(row, activity(row.model)) for row in rows),
        gpus=tuple(_gpu_bar(entry, by_lease) for entry in sorted(gpus, key=lambda g: g["gpu"])),
        window_s=window_s,
        step_s=step_s,
    )
