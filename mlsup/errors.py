"""The one exception tree of mlsup.

Every error mlsup raises on purpose derives from :class:`MlsupError`, so a feature can catch
``mlsup.MlsupError`` at its boundary, and the specific subclasses below when it wants to act::

    MlsupError
    ├── ConfigError                 a configuration file, manifest entry or argument is invalid
    │   ├── InvalidArgument         a function got an argument value it cannot use (a ValueError)
    │   ├── InvalidRequest          a request to a feature runner is malformed (HTTP 422)
    │   └── ServiceNotFound         no such feature or service in the services.yaml registry
    ├── ProtocolError               a frame or control message is malformed, hostile or too big
    ├── TransportError              the peer could not be reached or did not answer
    │   ├── RequestTimeout          no reply within the call's deadline
    │   ├── PeerGone                the process serving the endpoint died during the call
    │   ├── SupervisorUnavailable   no supervisor is running for this runtime directory
    │   └── CannotListen            an endpoint could not be bound (in use, no permission)
    ├── RemoteError                 the peer raised an error that is not one of ours
    ├── DeviceError                 a GPU is unknown, or device discovery failed
    ├── LeaseError                  VRAM lease problems
    │   ├── LeaseTimeout            the lease was not granted within the timeout
    │   ├── LeaseNotHeld            this token never held that lease (unknown or forged id)
    │   ├── LeaseLost               the lease was held but is gone (expired, revoked, preempted)
    │   └── CapacityExceeded        the request can never fit on that GPU
    ├── UsageError                  an object was used out of order (after close, before connect)
    ├── BenchmarkError              a benchmark could not measure (a peer or contender failed)
    ├── ModelError                  a model could not be served
    │   ├── ModelNotFound           no such model in the manifest
    │   ├── ModelLoadError          the files are missing or corrupt, or the loader failed
    │   ├── ModelOOM                the device ran out of memory while loading or running
    │   ├── WorkerCrashed           the worker process died (carries the exit code or signal)
    │   ├── Preempted               the model was asked to yield to a higher priority
    │   ├── ModelFailed             the model crashed too often and is parked until reloaded
    │   ├── NoWorkerLog             the model never ran a worker in this runtime directory
    │   ├── FallbackExhausted       every tier of a FallbackChain failed (carries each cause)
    │   ├── UnsupportedOperation    the model's kind does not offer that operation
    │   └── QueueFull               too many requests wait for that model; retry later
    └── IllegalTransition           a lifecycle event that cannot happen in that state (a bug)

    MlsupError (continued)
    └── JobError                    a queued job (mlsup.jobs, mlsup.queues) gave no result
        ├── InvalidJobData          the job's data does not fit its operation (names the field)
        └── JobFailed               the job failed for good (carries BullMQ's failedReason)

    BaseException
    └── Interrupt                   cooperative cancellation that must not be swallowed
        ├── ShutdownRequested       the process is stopping (SIGTERM, supervisor stop)
        └── YieldRequested          a lease holder must give its VRAM back now

Errors carry their context (``model``, ``lease_id``, ``gpu``, ``pid``, ``signal``...) in
:attr:`MlsupError.context`, and their message says what to do next. Errors cross process
boundaries as plain data (:meth:`MlsupError.to_wire` / :func:`error_from_wire`), never pickled.

:class:`Interrupt` and its subclasses derive from :class:`BaseException` for the reason trio's
``Cancelled`` does: a loader's ``except Exception`` must not swallow a shutdown or preemption.
"""

from __future__ import annotations

import signal as _signal
from typing import Any, ClassVar

__all__ = [
    "BenchmarkError",
    "CannotListen",
    "CapacityExceeded",
    "ConfigError",
    "DeviceError",
    "FallbackExhausted",
    "IllegalTransition",
    "Interrupt",
    "InvalidArgument",
    "InvalidJobData",
    "InvalidRequest",
    "JobError",
    "JobFailed",
    "LeaseError",
    "LeaseLost",
    "LeaseNotHeld",
    "LeaseTimeout",
    "MlsupError",
    "ModelError",
    "ModelFailed",
    "ModelLoadError",
    "ModelNotFound",
    "ModelOOM",
    "NoWorkerLog",
    "PeerGone",
    "Preempted",
    "ProtocolError",
    "QueueFull",
    "RemoteError",
    "RequestTimeout",
    "ServiceNotFound",
    "ShutdownRequested",
    "SupervisorUnavailable",
    "TransportError",
    "UnsupportedOperation",
    "UsageError",
    "WorkerCrashed",
    "YieldRequested",
    "error_from_wire",
]

# Context values must survive msgpack: keep them to these plain types.
_WIRE_SCALARS = (str, int, float, bool, type(None))


class MlsupError(Exception):
    """Root of every error mlsup raises on purpose.

    ``context`` holds the facts a caller may act on (model id, lease id, gpu, pid, signal);
    they also appear in ``str(error)`` so that logs carry them.
    """

    #: Errors that a caller may safely retry (idempotent calls only).
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context: dict[str, Any] = {k: v for k, v in context.items() if v is not None}

    def __str__(self) -> str:
        if not self.context:
            return self.message
        facts = ", ".join(f"{k}={v!r}" for k, v in sorted(self.context.items()))
        return f"{self.message} [{facts}]"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, **{self.context!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keeps errors usable with multiprocessing's queues in tests and tools; they never
        # cross an mlsup socket pickled (see to_wire).
        return (_rebuild, (type(self), self.message, self.context))

    def to_wire(self) -> dict[str, Any]:
        """The error as plain data for a reply frame."""
        context = {k: v for k, v in self.context.items() if isinstance(v, _WIRE_SCALARS)}
        return {"type": type(self).__name__, "message": self.message, "context": context}


def _rebuild(cls: type[MlsupError], message: str, context: dict[str, Any]) -> MlsupError:
    return cls(message, **context)


class ConfigError(MlsupError):
    """A configuration file, manifest entry, endpoint or argument is invalid.

    The message names the file, the model and the field where they are known.
    """


class ProtocolError(MlsupError):
    """A frame or control message is malformed, hostile, too large or of another version.

    Raised on the receiving side; a server that receives one replies with it and keeps serving.
    """


class TransportError(MlsupError):
    """The peer could not be reached, or the connection failed."""


class RequestTimeout(TransportError):
    """No reply came within the call's deadline: the peer is dead, hung or overloaded."""

    retryable = True


class PeerGone(TransportError):
    """The process serving the endpoint died while a call waited for it."""

    retryable = True


class SupervisorUnavailable(TransportError):
    """No supervisor answers for this runtime directory; start one with ``mlsup start``."""


class RemoteError(MlsupError):
    """The peer raised an exception that is not an mlsup error.

    ``context["remote_type"]`` names the original exception class.
    """


class DeviceError(MlsupError):
    """A GPU index is unknown, or device discovery (NVML, configuration) failed."""


class LeaseError(MlsupError):
    """Base of the VRAM lease errors."""


class LeaseTimeout(LeaseError):
    """The lease was not granted within the timeout; the request left the queue."""

    retryable = True


class LeaseNotHeld(LeaseError):
    """This holder never held that lease: the id is unknown or the token does not match."""


class LeaseLost(LeaseError):
    """The lease was held but is gone: expired, revoked after preemption, or lost by Redis."""


class CapacityExceeded(LeaseError):
    """The request can never be granted: it is larger than the GPU's whole capacity."""


class ModelError(MlsupError):
    """Base of the errors about serving one model."""


class ModelNotFound(ModelError):
    """No model of that id is in the manifest."""


class ModelLoadError(ModelError):
    """The model's files are missing or corrupt, or its loader failed; names the path."""


class ModelOOM(ModelError):
    """The device ran out of memory while loading or running the model."""


class WorkerCrashed(ModelError):
    """The worker process serving the model died; carries ``exitcode`` or ``signal``."""

    retryable = True

    @classmethod
    def from_returncode(cls, returncode: int, **context: Any) -> WorkerCrashed:
        """Build the error from a ``Popen``-style return code (negative: killed by a signal)."""
        if returncode < 0:
            try:
                name = _signal.Signals(-returncode).name
            except ValueError:
                name = f"signal {-returncode}"
            return cls(f"worker was killed by {name}", signal=name, **context)
        return cls(f"worker exited with code {returncode}", exitcode=returncode, **context)


class Preempted(ModelError):
    """The model gave its VRAM to a higher-priority request; it reloads when asked again."""

    retryable = True


class ModelFailed(ModelError):
    """The model crashed too often and is parked; ``mlsup load MODEL`` resets it."""


class InvalidArgument(ConfigError, ValueError):
    """A function got an argument value it cannot use (a ``vram_mb`` that is not a positive
    integer, an empty operation name). Raised before anything changes; it is also a
    :class:`ValueError`, as a bad argument value is in Python."""


class CannotListen(TransportError):
    """An endpoint could not be bound: its address is in use, its directory is not writable,
    or its path is too long for a unix socket. Names the endpoint."""


class NoWorkerLog(ModelError):
    """``mlsup logs MODEL`` found no log: the model never ran a worker in this runtime
    directory (load it first, or check ``$MLSUP_RUNTIME_DIR``)."""


class UsageError(MlsupError, RuntimeError):
    """An object was used out of order: after ``close()``, before ``connect()``, or a lease
    that no :class:`GPUBoss` granted asked for preemption. A bug at the call site; it is also
    a :class:`RuntimeError`."""


class BenchmarkError(MlsupError):
    """``mlsup bench`` could not measure: a benchmark peer or contender process failed, a
    measurement had no samples, or a workload is unknown."""


class IllegalTransition(MlsupError):
    """A lifecycle event that cannot happen in a supervised model's state: a bug in the
    supervisor, never the result of user input (the message names the state and the event)."""


class InvalidRequest(ConfigError):
    """A request to a feature runner (``mlsup.service``) is malformed; it answers 422 and
    changes nothing."""


class FallbackExhausted(ModelError):
    """Every tier of a :class:`~mlsup.service.fallback.FallbackChain` failed for now.

    ``causes`` lists ``(tier, error)`` in the order tried; the message names each. Retryable:
    every cause was a "not now" error (a bad input fails at once, without falling back).
    """

    retryable = True

    def __init__(
        self,
        message: str,
        causes: list[tuple[str, BaseException]] | None = None,
        **context: Any,
    ) -> None:
        super().__init__(message, **context)
        self.causes: list[tuple[str, BaseException]] = list(causes or [])


class ServiceNotFound(ConfigError):
    """No feature, or no service of a feature, of that id in the services registry.

    The message lists the known ids and the root that was searched; context names
    ``feature`` and ``service``.
    """


class Interrupt(BaseException):
    """Cooperative cancellation that an ``except Exception`` must not swallow."""


class ShutdownRequested(Interrupt):
    """The process is stopping (SIGTERM, or the supervisor stops)."""


class YieldRequested(Interrupt):
    """A lease holder must give its VRAM back now (preemption deadline reached)."""


_BY_NAME: dict[str, type[MlsupError]] = {
    cls.__name__: cls
    for cls in (
        MlsupError,
        ConfigError,
        ProtocolError,
        TransportError,
        RequestTimeout,
        PeerGone,
        SupervisorUnavailable,
        RemoteError,
        DeviceError,
        LeaseError,
        LeaseTimeout,
        LeaseNotHeld,
        LeaseLost,
        CapacityExceeded,
        ModelError,
        ModelNotFound,
        ModelLoadError,
        ModelOOM,
        WorkerCrashed,
        Preempted,
        ModelFailed,
        InvalidArgument,
        CannotListen,
        NoWorkerLog,
        UsageError,
        BenchmarkError,
        IllegalTransition,
        FallbackExhausted,
        InvalidRequest,
        ServiceNotFound,
    )
}


def error_from_wire(data: object) -> MlsupError:
    """Rebuild an error sent by :meth:`MlsupError.to_wire`.

    Only names of this module's classes are honoured; anything else becomes a
    :class:`RemoteError` (a peer cannot make us instantiate arbitrary classes).
    """
    if not isinstance(data, dict):
        return ProtocolError(f"error reply is not a map: {type(data).__name__}")
    name = data.get("type")
    message = data.get("message")
    context = data.get("context")
    if not isinstance(message, str):
        message = "remote error without a message"
    if not isinstance(context, dict) or not all(isinstance(k, str) for k in context):
        context = {}
    cls = _BY_NAME.get(name) if isinstance(name, str) else None
    if cls is None:
        context = {**context, "remote_type": name if isinstance(name, str) else "?"}
        return RemoteError(message, **context)
    return cls(message, **context)


# --- The HTTP gateway ------------------------------------------------------------------------


class UnsupportedOperation(ModelError):
    """The model's kind does not offer the operation; the message names the kinds that do."""


class QueueFull(ModelError):
    """The model already has as many requests in flight and waiting as it may; retry later."""


_BY_NAME.update({cls.__name__: cls for cls in (UnsupportedOperation, QueueFull)})


# -- Job queues ----------------------------------------------------------------------------------


class JobError(MlsupError):
    """Base of the errors about queued jobs (:mod:`mlsup.jobs`, :mod:`mlsup.queues`)."""


class InvalidJobData(JobError):
    """A job's data does not fit its operation; ``field`` names the offending field.

    The job fails at once and is not retried: the same data would fail again.
    """


class JobFailed(JobError):
    """A job failed and will not be retried; ``reason`` is its ``failedReason``."""


_BY_NAME.update({cls.__name__: cls for cls in (JobError, InvalidJobData, JobFailed)})
