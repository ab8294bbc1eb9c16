"""What the supervisor knows about one model: its state, lease, current worker and last stop.

A :class:`ModelRecord` is mutated only on the supervisor's event loop, by the daemon (which
executes :mod:`mlsup.supervisor.decide`'s actions) and through the methods below that apply a
worker's reports; :meth:`ModelRecord.view` is the frozen snapshot decisions are made on.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import psutil

from mlsup import defaults
from mlsup.contracts import (
    ExitReason,
    ModelStatus,
    WorkerFailed,
    WorkerHeartbeat,
    WorkerProgress,
    WorkerReady,
)
from mlsup.errors import MlsupError, ModelLoadError, ModelOOM
from mlsup.kit.leases import GPULease, Priority
from mlsup.kit.manifest import ModelSpec
from mlsup.supervisor.decide import Limits, View, over_lease_since
from mlsup.supervisor.process import WorkerProcess, describe_exit
from mlsup.supervisor.states import Event, ModelState, next_state

__all__ = ["LastStop", "ModelRecord", "WorkerRun"]


@dataclass
class WorkerRun:
    """One worker process of a model (one generation), from spawn until the next spawn."""

    generation: int
    token: str = field(default_factory=lambda: secrets.token_hex(8))
    process: WorkerProcess | None = None  #: None once it has ended
    watcher: asyncio.Task[None] | None = None  #: waits for the process to end
    endpoint: str | None = None  #: set when it reports ready
    stage: str = "spawning a worker"
    bytes_read: int | None = None  #: of the model's files, while loading
    bytes_total: int | None = None
    progress_at: float = field(default_factory=time.monotonic)
    requests: int = 0  #: calls it has served, from its heartbeats
    memory_mb: int | None = None
    reported: MlsupError | None = None  #: the failure it reported before exiting
    oom_reported: bool = False
    cpu_s: float = 0.0  #: its CPU time when last sampled
    cpu_at: float = field(default_factory=time.monotonic)  #: when that last grew
    busy_since: float | None = None  #: when its call in hand began (from its heartbeats)
    kill_reason: ExitReason | None = None  #: why the supervisor killed it, if it did
    kill_note: str = ""
    vram_peak_mb: int | None = None  #: the most VRAM it was seen using (NVML)
    vram_over_since: float | None = None  #: since when it uses more than its lease allows


@dataclass(frozen=True)
class LastStop:
    """How and why a model's worker last stopped, and what its waiters were told."""

    exit_code: int | None = None  #: minus the signal if it was killed
    reason: ExitReason | None = None
    note: str | None = None  #: for people (``idle for 300 s``)
    error: MlsupError | None = None


@dataclass(eq=False)
class ModelRecord:
    """One manifest model under supervision."""

    spec: ModelSpec
    state: ModelState = ModelState.UNLOADED
    priority: Priority = Priority.NORMAL
    lease: GPULease | None = None
    estimate_mb: int | None = None
    run: WorkerRun | None = None
    stop: LastStop = LastStop()
    restarts: int = 0
    crash_times: tuple[float, ...] = ()
    failed_at: float | None = None  #: when it last became FAILED (``time.monotonic()``)
    last_activity: float = field(default_factory=time.monotonic)
    #: When each lifecycle step last happened (``time.monotonic()``, which is system-wide on
    #: Linux, so other processes on the host can compare): ``lease_requested``,
    #: ``lease_granted``, ``spawned``, ``worker_started`` (its first report), ``ready``,
    #: ``exited`` (an unexpected end), ``unloaded`` (drained). Shown in status rows: it breaks
    #: a cold start or a recovery into phases.
    timeline: dict[str, float] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None  #: its bring-up or recovery, while one runs
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def worker(self) -> WorkerProcess | None:
        """Its running worker process, if any."""
        return self.run.process if self.run is not None else None

    @property
    def error(self) -> MlsupError | None:
        """What callers waiting for this model are told."""
        return self.stop.error

    async def fire(self, event: Event) -> None:
        """Apply a lifecycle event and wake everyone waiting on this model."""
        self.state = next_state(self.state, event)
        async with self.changed:
            self.changed.notify_all()

    def mark(self, step: str) -> None:
        """Record that lifecycle step happened now (see :attr:`timeline`)."""
        self.timeline[step] = time.monotonic()

    def new_run(self) -> WorkerRun:
        """A fresh identity for the next worker: reports from older ones are refused."""
        generation = self.run.generation + 1 if self.run is not None else 1
        self.run = WorkerRun(generation)
        return self.run

    def view(self, limits: Limits) -> View:
        """The frozen snapshot :func:`mlsup.supervisor.decide.decide` reads."""
        run = self.run
        return View(
            model=self.id,
            state=self.state,
            limits=limits,
            idle_timeout_s=self.spec.idle_timeout_s,
            has_worker=self.worker is not None,
            estimate_mb=self.estimate_mb,
            memory_mb=run.memory_mb if run is not None else None,
            oom_reported=run.oom_reported if run is not None else False,
            reported=run.reported if run is not None else None,
            crash_times=self.crash_times,
            last_activity=self.last_activity,
            progress_at=run.progress_at if run is not None else 0.0,
            cpu_at=run.cpu_at if run is not None else 0.0,
            busy_since=run.busy_since if run is not None else None,
            kill_reason=run.kill_reason if run is not None else None,
            kill_note=run.kill_note if run is not None else "",
            leased_mb=self.lease.vram_mb if self.lease is not None else None,
            vram_peak_mb=run.vram_peak_mb if run is not None else None,
            vram_over_since=run.vram_over_since if run is not None else None,
            lease_lost=self.lease.lost if self.lease is not None else None,
            failure=self.stop.error if self.state is ModelState.FAILED else None,
            failed_at=self.failed_at,
        )

    # -- reports of the current worker (the control plane checked who sent them) ---------------

    def progressed(self, report: WorkerProgress | None = None) -> None:
        """The worker showed a sign of life (and, with a report, what it is doing)."""
        assert self.run is not None
        self.run.progress_at = time.monotonic()
        if report is not None:
            if self.timeline.get("worker_started", 0.0) < self.timeline.get("spawned", 0.0):
                self.mark("worker_started")  # its first report: the process runs our code
            self.run.stage = report.stage
            self.run.bytes_read = report.bytes_read
            self.run.bytes_total = report.bytes_total

    def ready(self, report: WorkerReady) -> None:
        """The worker loaded the model and serves at its endpoint."""
        assert self.run is not None
        self.run.endpoint = report.endpoint
        self.run.memory_mb = report.memory_mb
        self.run.stage = ""
        self.last_activity = time.monotonic()
        self.mark("ready")

    def heartbeat(self, report: WorkerHeartbeat) -> None:
        """The worker is alive: its served count, memory and idleness."""
        assert self.run is not None
        self.run.requests = report.requests
        if report.memory_mb is not None:
            self.run.memory_mb = report.memory_mb
        idle_s = 0.0 if report.busy else max(0.0, report.idle_s)
        self.run.busy_since = time.monotonic() - report.busy_s if report.busy else None
        self.last_activity = max(self.last_activity, time.monotonic() - idle_s)

    def lease_until(self, ttl_s: float) -> float | None:
        """Until when its lease is surely held (``time.monotonic()``): the last renewal plus
        the TTL, less a margin; None without a lease. Its worker serves only until then."""
        lease = self.lease
        if lease is None or not lease.held:
            return None
        return lease.renewed_at + ttl_s - defaults.WORKER_LEASE_MARGIN_S

    def sample_cpu(self) -> None:
        """Note whether its worker used CPU since the last sample (alive, if silent)."""
        worker, run = self.worker, self.run
        if worker is None or run is None:
            return
        try:
            times = psutil.Process(worker.pid).cpu_times()
        except psutil.Error:
            return  # ended: its exit is on its way
        used = times.user + times.system
        if used > run.cpu_s:
            run.cpu_s, run.cpu_at = used, time.monotonic()

    def sample_vram(self, reading: Mapping[int, int], limits: Limits) -> None:
        """Note what VRAM its worker uses now (``reading``: MB by pid)."""
        worker, run = self.worker, self.run
        if worker is None or run is None:
            return
        used = reading.get(worker.pid)
        if used is not None:
            run.vram_peak_mb = max(run.vram_peak_mb or 0, used)
        leased = self.lease.vram_mb if self.lease is not None else None
        run.vram_over_since = over_lease_since(
            run.vram_over_since, used, leased, limits, time.monotonic()
        )

    def failed(self, report: WorkerFailed) -> MlsupError:
        """The worker is about to exit because of an error: what its waiters will be told."""
        assert self.run is not None
        if report.memory_mb is not None:
            self.run.memory_mb = report.memory_mb
        error: MlsupError
        if report.kind == "oom":
            self.run.oom_reported = True
            error = ModelOOM(report.message, model=self.id)
        else:
            error = ModelLoadError(
                f"model {self.id!r} failed to load: {report.message}", model=self.id
            )
        self.run.reported = error
        return error

    def status(self) -> ModelStatus:
        """A row of ``mlsup status``."""
        now = time.monotonic()
        lease = self.lease if self.lease is not None and self.lease.held else None
        run, stop = self.run, self.stop
        worker = self.worker
        loading = run if self.state is ModelState.STARTING else None
        return ModelStatus(
            model=self.id,
            loader=self.spec.loader,
            state=self.state.value,
            stage=loading.stage if loading is not None else "",
            bytes_read=loading.bytes_read if loading is not None else None,
            bytes_total=loading.bytes_total if loading is not None else None,
            pid=worker.pid if worker is not None else None,
            endpoint=run.endpoint if run is not None and worker is not None else None,
            generation=run.generation if run is not None else 0,
            gpu=lease.gpu if lease is not None else None,
            leased_mb=lease.vram_mb if lease is not None else None,
            lease_id=lease.id if lease is not None else None,
            measured_mb=run.memory_mb if run is not None else None,
            restarts=self.restarts,
            requests=run.requests if run is not None else 0,
            idle_s=round(now - self.last_activity, 1) if self.state is ModelState.READY else None,
            priority=self.priority.name.lower(),  # type: ignore[arg-type]
            exit_code=stop.exit_code,
            last_exit=None if stop.exit_code is None else describe_exit(stop.exit_code),
            exit_reason=stop.reason,
            reason=stop.note,
            error=stop.error.to_wire() if stop.error is not None else None,
            timeline=dict(self.timeline),
        )
