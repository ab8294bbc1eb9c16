"""What the supervisor does about something that happened to a model: one pure function.

``decide(view, event, now) -> [actions]`` reads a frozen snapshot of the model (:class:`View`)
and an event (a worker exited, a housekeeping tick, a preemption request, an unload), and
returns what to do, in order. It performs no I/O and reads no clock, so every decision (exit
statuses, OOM regrowth, restart backoff and flapping, idle expiry, stalled loads, preemption
grace, drains) is tested as a table in ``tests/unit/test_decide.py``. The daemon executes the
actions (:mod:`mlsup.supervisor.daemon`) and feeds back the events.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlsup import defaults
from mlsup.contracts import ExitReason, WorkerExit
from mlsup.errors import (
    MlsupError,
    ModelFailed,
    ModelLoadError,
    Preempted,
)
from mlsup.kit.idle import idle_expired
from mlsup.supervisor.process import describe_exit
from mlsup.supervisor.restart import RestartPolicy
from mlsup.supervisor.states import Event, ModelState

__all__ = [
    "Action",
    "Drain",
    "EventIn",
    "KillWorker",
    "Limits",
    "Log",
    "MarkFailed",
    "PreemptionAsked",
    "RecordCrashes",
    "ReleaseLease",
    "RespawnAfter",
    "SetEstimate",
    "StopAsked",
    "Tick",
    "Transition",
    "View",
    "WorkerExited",
    "decide",
    "implicit_load_refused",
    "over_lease_since",
]

_QUIET = (ModelState.UNLOADED, ModelState.FAILED, ModelState.DRAINING)


@dataclass(frozen=True)
class Limits:
    """The settings decisions depend on (the ``[supervisor]`` table)."""

    restart: RestartPolicy
    load_stall_timeout_s: float = defaults.LOAD_STALL_TIMEOUT_S
    terminate_grace_s: float = defaults.TERMINATE_GRACE_S
    heartbeat_s: float = defaults.HEARTBEAT_INTERVAL_S
    heartbeat_misses: int = defaults.HEARTBEAT_MISSES
    hung_call_s: float = defaults.HUNG_CALL_S
    vram_over_margin_mb: int = defaults.VRAM_OVER_MARGIN_MB
    vram_over_for_s: float = defaults.VRAM_OVER_FOR_S


@dataclass(frozen=True)
class View:
    """A frozen snapshot of one model, all that :func:`decide` may read."""

    model: str
    state: ModelState
    limits: Limits
    idle_timeout_s: float
    has_worker: bool = False
    estimate_mb: int | None = None
    memory_mb: int | None = None  #: what its worker last measured
    oom_reported: bool = False  #: its worker said it ran out of memory
    reported: MlsupError | None = None  #: the error its worker reported before exiting
    crash_times: tuple[float, ...] = ()  #: recent crashes (monotonic seconds)
    last_activity: float = 0.0
    progress_at: float = 0.0  #: its worker's last report (a load's progress, a heartbeat)
    cpu_at: float = 0.0  #: when its worker's CPU time last grew
    busy_since: float | None = None  #: when the call in hand began, as its last heartbeat said
    kill_reason: ExitReason | None = None  #: why the supervisor killed its current worker
    kill_note: str = ""
    leased_mb: int | None = None  #: its lease's size, while it holds one
    vram_peak_mb: int | None = None  #: the most VRAM its worker was seen using
    vram_over_since: float | None = None  #: since when its worker uses more than the lease
    lease_lost: MlsupError | None = None  #: why its lease is gone, when it is
    failure: MlsupError | None = None  #: why it is FAILED, when it is
    failed_at: float | None = None  #: when it became FAILED


# --- events --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerExited:
    """The model's current worker ended with ``code`` (negative: killed by signal -code)."""

    pid: int
    code: int


@dataclass(frozen=True)
class Tick:
    """Housekeeping: time passed."""


@dataclass(frozen=True)
class PreemptionAsked:
    """A higher priority asked for the model's VRAM, to be yielded within ``remaining_s``."""

    remaining_s: float
    requester: str


@dataclass(frozen=True)
class StopAsked:
    """Someone wants the model unloaded: ``unload`` (a person or a proxy) or ``shutdown``."""

    reason: ExitReason


EventIn = WorkerExited | Tick | PreemptionAsked | StopAsked

# --- actions -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transition:
    """Apply a lifecycle event to the model's state (:mod:`mlsup.supervisor.states`)."""

    event: Event


@dataclass(frozen=True)
class Log:
    """Tell the operator."""

    text: str


@dataclass(frozen=True)
class SetEstimate:
    """Lease ``vram_mb`` next time (after an out-of-memory)."""

    vram_mb: int


@dataclass(frozen=True)
class ReleaseLease:
    """Give the model's lease back now."""


@dataclass(frozen=True)
class RecordCrashes:
    """Remember these crash times (the restart policy's window)."""

    times: tuple[float, ...]


@dataclass(frozen=True)
class RespawnAfter:
    """Wait ``delay_s``, then lease (unless still held) and spawn a new worker."""

    delay_s: float
    reason: ExitReason
    note: str | None = None  #: why, for ``mlsup status``


@dataclass(frozen=True)
class MarkFailed:
    """Give up: release the lease, park the model as FAILED, tell its waiters ``error``."""

    error: MlsupError
    reason: ExitReason


@dataclass(frozen=True)
class Drain:
    """Stop the worker (SIGTERM, ``grace_s``, SIGKILL) and release the lease; tell waiters
    ``error`` if there is one. ``note`` is what ``mlsup status`` shows."""

    reason: ExitReason
    note: str
    grace_s: float | None = None
    error: MlsupError | None = None


@dataclass(frozen=True)
class KillWorker:
    """SIGKILL the worker's process group; its exit comes back as :class:`WorkerExited`,
    and is recorded as ``reason`` (``note`` for people) rather than a crash."""

    reason: ExitReason | None = None
    note: str = ""


Action = (
    Transition
    | Log
    | SetEstimate
    | ReleaseLease
    | RecordCrashes
    | RespawnAfter
    | MarkFailed
    | Drain
    | KillWorker
)


def decide(view: View, event: EventIn, now: float) -> list[Action]:
    """What to do about ``event`` happening to the model ``view`` at ``now``."""
    if isinstance(event, WorkerExited):
        return _worker_exited(view, event, now)
    if isinstance(event, Tick):
        return _tick(view, now)
    if isinstance(event, PreemptionAsked):
        return _preempted(view, event)
    return _stop(view, event)


def implicit_load_refused(view: View, now: float) -> ModelFailed | None:
    """Why a caller's implicit load (its first use of the model) may not revive it at ``now``:
    a FAILED model stays parked for the restart policy's cool-down, or a crash loop would go
    on at the pace of its callers. None when it may load."""
    if view.state is not ModelState.FAILED or view.failed_at is None:
        return None
    wait_s = view.failed_at + view.limits.restart.cooldown_s - now
    if wait_s <= 0:
        return None
    cause = str(view.failure) if view.failure is not None else "it failed"
    return ModelFailed(
        f"model {view.model!r} is FAILED and parked for {wait_s:.0f} s more: {cause} "
        f"(`mlsup load {view.model}` retries now)",
        model=view.model,
        retry_in_s=round(wait_s, 1),
    )


def _worker_exited(view: View, event: WorkerExited, now: float) -> list[Action]:
    if view.state is ModelState.DRAINING:
        return []  # the drain is waiting for exactly this
    how = describe_exit(event.code)
    if view.kill_reason is not None:
        how = f"{how} ({view.kill_reason.value}: {view.kill_note})"
    actions: list[Action] = [
        Log(f"{view.model}: worker pid {event.pid} {how}"),
        Transition(Event.WORKER_EXITED),
    ]
    if event.code == WorkerExit.LOAD_ERROR:
        # The files or the runtime are wrong: respawning cannot help.
        error = view.reported or ModelLoadError(
            f"model {view.model!r} failed to load (see `mlsup logs {view.model}`)",
            model=view.model,
        )
        return [*actions, MarkFailed(error, ExitReason.LOAD_ERROR)]
    reason = view.kill_reason or ExitReason.CRASH
    if view.kill_reason is ExitReason.OOM and view.vram_peak_mb is not None:
        # It outgrew its lease, measured: lease what it used.
        actions += [
            Log(f"{view.model}: re-leasing {view.vram_peak_mb} MB, the peak it used"),
            SetEstimate(view.vram_peak_mb),
            ReleaseLease(),
        ]
    elif event.code == WorkerExit.OOM or view.oom_reported:
        reason = ExitReason.OOM
        grown = int(max(view.estimate_mb or 0, view.memory_mb or 0) * defaults.OOM_GROWTH) + 1
        actions += [
            Log(f"{view.model}: out of memory; re-leasing {grown} MB (was {view.estimate_mb})"),
            SetEstimate(grown),
            ReleaseLease(),
        ]
    policy = view.limits.restart
    decision = policy.decide(view.crash_times, now)
    actions.append(RecordCrashes(decision.recent))
    if decision.give_up:
        failure = ModelFailed(
            f"model {view.model!r} crashed {decision.crashes} times within "
            f"{policy.window_s:g} s (last: {how}); fix it, then "
            f"`mlsup load {view.model}` to try again (see `mlsup logs {view.model}`)",
            model=view.model,
            crashes=decision.crashes,
            last_exit=how,
        )
        return [*actions, MarkFailed(failure, ExitReason.FLAPPING)]
    note = f"{reason.value}: {view.kill_note}" if view.kill_reason is not None else None
    return [*actions, RespawnAfter(decision.delay_s, reason, note)]


def _tick(view: View, now: float) -> list[Action]:
    if view.state in _QUIET:
        return []
    if view.lease_lost is not None:
        note = f"lease lost: {view.lease_lost}"
        return [Drain(ExitReason.LEASE_LOST, note, error=view.lease_lost)]
    if view.state is ModelState.READY and idle_expired(
        last_used=view.last_activity, in_use=0, timeout_s=view.idle_timeout_s, now=now
    ):
        return [Drain(ExitReason.IDLE, f"idle for {view.idle_timeout_s:g} s")]
    if view.kill_reason is not None:
        return []  # killed already: its exit is on its way
    stall = view.limits.load_stall_timeout_s
    if view.state is ModelState.STARTING and view.has_worker and now - view.progress_at >= stall:
        note = f"no load progress for {stall:g} s"
        return [Log(f"{view.model}: {note}; killing it"), KillWorker(ExitReason.STALLED, note)]
    hung = _hung(view, now) if view.state is ModelState.READY and view.has_worker else None
    if hung is not None:
        return [Log(f"{view.model}: hung ({hung}); killing it"), KillWorker(ExitReason.HUNG, hung)]
    over_s = now - view.vram_over_since if view.vram_over_since is not None else -1.0
    if view.has_worker and over_s >= view.limits.vram_over_for_s:
        note = (
            f"used {view.vram_peak_mb} MB of VRAM on a {view.leased_mb} MB lease for {over_s:.1f} s"
        )
        return [Log(f"{view.model}: {note}; killing it"), KillWorker(ExitReason.OOM, note)]
    return []


def over_lease_since(
    since: float | None, used_mb: int | None, leased_mb: int | None, limits: Limits, now: float
) -> float | None:
    """Since when a worker using ``used_mb`` has been over its lease by more than the margin
    (``since`` is the previous answer); None when it is not over now."""
    if used_mb is None or leased_mb is None or used_mb <= leased_mb + limits.vram_over_margin_mb:
        return None
    return now if since is None else since


def _hung(view: View, now: float) -> str | None:
    """Why a ready worker counts as hung, if it does: silent and idle on the CPU for its
    heartbeat misses (a long inference that holds the GIL silences heartbeats but computes),
    or a call running far past any caller's deadline."""
    limits = view.limits
    silent_s = now - max(view.progress_at, view.cpu_at)
    if silent_s >= limits.heartbeat_s * limits.heartbeat_misses:
        return f"no heartbeat and no CPU use for {silent_s:.1f} s"
    if view.busy_since is not None and now - view.busy_since >= limits.hung_call_s:
        return f"a call has run for {now - view.busy_since:.0f} s (limit {limits.hung_call_s:g} s)"
    return None


def _preempted(view: View, event: PreemptionAsked) -> list[Action]:
    if view.state in _QUIET:
        return []
    margin = defaults.PREEMPT_YIELD_MARGIN_S
    grace = max(0.0, min(view.limits.terminate_grace_s, event.remaining_s - margin))
    error = Preempted(
        f"model {view.model!r} gave its VRAM to a higher-priority request; it reloads when "
        "asked again",
        model=view.model,
    )
    return [
        Log(f"{view.model}: preempted by {event.requester}; {event.remaining_s:.1f} s to yield"),
        Drain(ExitReason.PREEMPTED, ExitReason.PREEMPTED.value, grace, error),
    ]


def _stop(view: View, event: StopAsked) -> list[Action]:
    if view.state in (ModelState.UNLOADED, ModelState.FAILED):
        return []
    note = "supervisor stopped" if event.reason is ExitReason.SHUTDOWN else "unloaded on request"
    return [Drain(event.reason, note)]
