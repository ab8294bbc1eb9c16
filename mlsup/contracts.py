"""What crosses a process boundary between the supervisor, its workers and its clients, defined
once and imported by both sides.

Every message is a msgspec :class:`~msgspec.Struct`: the sender builds it and sends
:func:`to_wire` (plain builtins, msgpack-safe); the receiver rebuilds it with :func:`from_wire`,
which validates types and rejects unknown fields, so a typo or a hostile peer gets a
:class:`~mlsup.errors.ProtocolError` that names the field, and changes nothing.

================================  ===================  ===================================
message                           sent by              read by
================================  ===================  ===================================
:class:`WorkerConfig`             supervisor (spawn)   the worker entry point
:class:`WorkerProgress` ...       worker               supervisor control plane
:class:`LoadArgs`, ...            proxy, CLI           supervisor control plane
:class:`ModelStatus`              supervisor           proxy, CLI (``mlsup status``)
================================  ===================  ===================================
"""

from __future__ import annotations

import enum
from typing import Any, Literal, TypeVar

import msgspec

from mlsup import defaults
from mlsup.errors import ProtocolError

__all__ = [
    "ExitReason",
    "FailureKind",
    "HeartbeatReply",
    "LoadArgs",
    "ModelArgs",
    "ModelStatus",
    "WorkerClaim",
    "WorkerConfig",
    "WorkerExit",
    "WorkerFailed",
    "WorkerHeartbeat",
    "WorkerIdentity",
    "WorkerProgress",
    "WorkerReady",
    "from_wire",
    "to_wire",
]

PriorityName = Literal["low", "normal", "high", "critical"]


class WorkerExit(enum.IntEnum):
    """Exit statuses of a worker process that it chose itself (a signal is anything else)."""

    OK = 0  #: stopped on request (SIGTERM, supervisor gone)
    LOAD_ERROR = 3  #: the model could not be loaded (bad file, missing runtime): do not retry
    OOM = 4  #: the device ran out of memory: re-lease more, then respawn
    LEASE_EXPIRED = 5  #: its lease went unrenewed past its expiry: it stopped serving


class ExitReason(enum.StrEnum):
    """Why a model's worker last stopped, as its status row says (``exit_reason``)."""

    UNLOAD = "unload"  #: someone asked (``mlsup unload``, the proxy)
    IDLE = "idle"  #: no requests for its idle timeout
    PREEMPTED = "preempted"  #: a higher priority needed its VRAM
    SHUTDOWN = "shutdown"  #: the supervisor stopped
    LEASE_LOST = "lease_lost"  #: its lease expired or was revoked
    STALLED = "stalled"  #: the load showed no progress for too long
    CRASH = "crash"  #: the worker died on its own (signal, unexpected exit status)
    OOM = "oom"  #: the device ran out of memory
    LOAD_ERROR = "load_error"  #: the loader failed: respawning cannot help
    FLAPPING = "flapping"  #: it crashed too often; the model is FAILED
    HUNG = "hung"  #: it stopped heartbeating (and computing), or a call ran far too long


class FailureKind(enum.StrEnum):
    """What a worker reports when it is about to exit with an error."""

    OOM = "oom"
    LOAD = "load"


class _Message(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Base of the messages: decoded from outside, so unknown fields are errors."""


# --- supervisor → worker -----------------------------------------------------------------------


class WorkerConfig(_Message, frozen=True):
    """Everything a worker process starts from (plain data; never pickled from a socket).

    ``model`` is :meth:`mlsup.kit.manifest.ModelSpec.to_dict`, validated again by the worker.
    """

    model: dict[str, Any]
    generation: int
    token: str
    endpoint: str
    control: str
    supervisor_pid: int
    log: str
    heartbeat_s: float
    env: dict[str, str] = {}
    #: Until when its lease is known to be held (``time.monotonic()``, system-wide on Linux):
    #: past it, without a newer word from the supervisor, the worker stops serving.
    lease_until: float | None = None
    max_message_bytes: int = defaults.MAX_MESSAGE_BYTES  #: the largest request header served

    @property
    def model_id(self) -> str:
        """The id of the model this worker serves."""
        return str(self.model.get("id", "?"))


# --- worker → supervisor -----------------------------------------------------------------------


class WorkerClaim(msgspec.Struct, frozen=True, kw_only=True):
    """The identity part of any worker report, read first (other fields ignored), so that a
    stranger is refused before the rest of its message is even parsed."""

    model: str
    generation: int
    token: str


class WorkerIdentity(_Message, frozen=True):
    """Who is reporting: a worker proves it is the current one with its generation's token."""

    model: str
    generation: int
    token: str


class WorkerProgress(WorkerIdentity, frozen=True):
    """A load stage (``loading x.gguf with gguf``) and how much of the model's files it has
    read: proof the load is not stalled, and what ``mlsup load``'s progress bar shows."""

    stage: str
    bytes_read: int | None = None
    bytes_total: int | None = None


class WorkerReady(WorkerIdentity, frozen=True):
    """The model is loaded and the worker serves on ``endpoint``."""

    endpoint: str
    pid: int
    memory_mb: int | None = None
    operations: list[str] = []
    load_s: float = 0.0


class WorkerHeartbeat(WorkerIdentity, frozen=True):
    """Alive, and how busy: ``requests`` is the number of calls it has served so far."""

    busy: bool
    requests: int
    idle_s: float
    memory_mb: int | None = None
    busy_s: float = 0.0  #: how long the call in hand has run, when busy


class HeartbeatReply(_Message, frozen=True):
    """The supervisor's answer to a heartbeat: until when the worker's lease is renewed
    (``time.monotonic()``); None when it holds none any more."""

    lease_until: float | None


class WorkerFailed(WorkerIdentity, frozen=True):
    """The worker is about to exit because of ``kind``."""

    kind: FailureKind
    message: str
    memory_mb: int | None = None


# --- clients → supervisor ----------------------------------------------------------------------


class ModelArgs(_Message, frozen=True):
    """Arguments naming one model (``unload``)."""

    model: str


class LoadArgs(ModelArgs, frozen=True):
    """Arguments of ``load``: a priority overrides the manifest's; ``timeout`` bounds a wait.
    ``implicit``: a caller's first use, not a person's ``mlsup load`` (it leaves a FAILED model
    parked during its cool-down)."""

    priority: PriorityName | None = None
    wait: bool = True
    timeout: float | None = None
    implicit: bool = False


# --- supervisor → clients ----------------------------------------------------------------------


class ModelStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One row of ``mlsup status``: what the supervisor knows about one model.

    Clients decode rows with :func:`from_wire` and read attributes; unknown fields are
    tolerated here (a newer supervisor may add columns), missing ones are errors.
    """

    model: str
    loader: str
    state: str  #: a :class:`mlsup.supervisor.states.ModelState` value
    stage: str = ""  #: the load stage while starting
    bytes_read: int | None = None  #: of the model's files, while loading
    bytes_total: int | None = None
    pid: int | None = None
    endpoint: str | None = None
    generation: int = 0
    gpu: int | None = None
    leased_mb: int | None = None
    lease_id: str | None = None
    measured_mb: int | None = None
    restarts: int = 0
    requests: int = 0  #: calls its current worker has served (from its heartbeats)
    idle_s: float | None = None
    priority: PriorityName = "normal"
    exit_code: int | None = None  #: how its last worker ended (minus the signal if killed)
    last_exit: str | None = None  #: the same, in words
    exit_reason: ExitReason | None = None  #: why its last worker stopped
    reason: str | None = None  #: why it was last drained or failed, for people
    error: dict[str, Any] | None = None  #: what waiting callers were told (``to_wire``)
    timeline: dict[str, float] = {}  #: when each lifecycle step last happened (monotonic s)


_M = TypeVar("_M")


def to_wire(message: msgspec.Struct) -> Any:
    """message as plain builtins (dicts, lists, strings, numbers), ready for msgpack."""
    return msgspec.to_builtins(message)


def from_wire(data: Any, kind: type[_M], *, what: str | None = None) -> _M:
    """Validate data received from another process as ``kind``; ProtocolError otherwise."""
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        name = what or kind.__name__
        raise ProtocolError(f"malformed {name}: {exc}", kind=name) from None
