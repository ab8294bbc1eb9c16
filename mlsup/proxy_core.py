"""The proxy's call core: everything :mod:`mlsup.proxy` decides, once, for threads and asyncio.

* the policies, pure: which calls may be sent twice (:func:`idempotent`), and what a lost
  worker means (:func:`classify_loss`: crashed, preempted, failed, or drained cleanly with the
  call unread, in which case any call may be sent again);
* :class:`SupervisorCore`: control-plane requests as plans;
* :class:`ModelCore`: one model's calls as plans — the worker binding (loaded on first use,
  its liveness checked at most once a slice), deadlines covering load, call and retry, and the
  lost-worker path.

Plans (:mod:`mlsup.ipc.plans`) never block; :mod:`mlsup.proxy`'s sync and async classes only
drive them. Status rows are read in one place, :func:`read_row`.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from mlsup import defaults
from mlsup.contracts import ExitReason, ModelStatus, from_wire
from mlsup.errors import (
    MlsupError,
    PeerGone,
    Preempted,
    ProtocolError,
    RequestTimeout,
    SupervisorUnavailable,
    TransportError,
    WorkerCrashed,
    error_from_wire,
)
from mlsup.ipc.callcore import CallCore
from mlsup.ipc.plans import Plan
from mlsup.ipc.transport import Transport
from mlsup.runtime import CONTROL_SOCKET, runtime_dir

__all__ = [
    "Loss",
    "ModelCore",
    "SupervisorCore",
    "classify_loss",
    "idempotent",
    "read_row",
]

#: Operations whose result depends only on their arguments.
_PURE = frozenset({"embed", "run", "transcribe", "tokenize"})
#: Generations, deterministic only with a seed (or greedy decoding).
_GENERATIVE = frozenset({"chat", "complete", "generate", "generate_image"})


def idempotent(op: str, kwargs: Mapping[str, Any]) -> bool:
    """Whether ``op(**kwargs)`` may be sent twice: the retry policy, pure.

    Embeddings, ONNX runs, transcriptions and tokenization always are; a generation is when
    it is seeded or greedy (temperature 0), and not streamed.
    """
    if op in _PURE:
        return True
    if op in _GENERATIVE and not kwargs.get("stream"):
        return kwargs.get("seed") is not None or kwargs.get("temperature") == 0
    return False


def read_row(row: Any) -> ModelStatus:
    """The one place the proxy reads a status row: validated into the typed contract."""
    return from_wire(row, ModelStatus, what="status row")


class Loss(NamedTuple):
    """What a lost worker means for the call it was serving."""

    error: MlsupError  #: what the caller is told
    unread: bool  #: the worker was drained on purpose and never read the call: resend it


def classify_loss(model: str, pid: int, row: ModelStatus | None) -> Loss:
    """Why the worker pid of model went away, from its status row (None: no supervisor).

    A clean drain (idle, unload: exit code 0, and not a preemption) finished the request in
    hand and dropped the rest unread, so a call that got no answer was never run.
    """
    gone = row is not None and row.pid != pid
    preempted = row is not None and row.exit_reason is ExitReason.PREEMPTED
    unread = gone and row is not None and row.exit_code == 0 and not preempted
    if preempted:
        error: MlsupError = Preempted(
            f"model {model!r} gave its VRAM to a higher-priority request (worker pid {pid}); "
            "it reloads when called again and capacity allows",
            model=model,
            pid=pid,
        )
    elif row is not None and row.error and row.state in ("failed", "unloaded"):
        error = error_from_wire(row.error)
    else:
        exit_text = row.last_exit if row is not None else None
        error = WorkerCrashed(
            f"the worker of {model!r} (pid {pid}) {exit_text or 'died'}; it is being respawned",
            model=model,
            pid=pid,
            exit=exit_text,
        )
    return Loss(error, unread)


class _Deadline:
    def __init__(self, clock: Callable[[], float], timeout: float) -> None:
        self.clock = clock
        self.timeout = timeout
        self.at = clock() + timeout

    @property
    def remaining(self) -> float:
        return self.at - self.clock()

    def expired(self, what: str) -> RequestTimeout:
        return RequestTimeout(
            f"{what} did not finish within {self.timeout:g} s", timeout=self.timeout
        )


class SupervisorCore:
    """Control-plane requests to the supervisor of a runtime directory, as plans."""

    def __init__(self, runtime: str | Path | None, transport: Transport, timeout: float) -> None:
        self.root = Path(runtime) if runtime is not None else runtime_dir()
        endpoint = f"ipc://{self.root / CONTROL_SOCKET}"
        if not transport.listening(endpoint):
            raise SupervisorUnavailable(
                f"no supervisor is running on {self.root}; start one with `mlsup start` "
                "(or `mlsup start --detach` to run it in the background)",
                runtime=str(self.root),
            )
        self.transport = transport
        self.timeout = timeout  #: the default deadline of model calls
        self.control = CallCore(
            endpoint, transport, timeout=defaults.CONTROL_TIMEOUT_S, pool=None,
            threshold=defaults.SHM_THRESHOLD_BYTES,
        )  # fmt: skip
        self._models: dict[tuple[str, float], Any] = {}
        self._lock = threading.Lock()

    def request(self, op: str, args: Any = None, *, timeout: float | None = None) -> Plan[Any]:
        """One control-plane request; a supervisor that does not answer (other than to a
        ``load``, which may wait for a model) is :class:`SupervisorUnavailable`."""
        try:
            return (yield from self.control.call(op, args, timeout=timeout))
        except RequestTimeout as exc:
            if op == "load":
                raise
            raise SupervisorUnavailable(
                f"the supervisor on {self.root} does not answer; is it stopped or hung? "
                "(`mlsup start` starts one)",
                runtime=str(self.root),
            ) from exc

    def row(self, model: str) -> Plan[dict[str, Any] | None]:
        """The status row of model (None: no such model)."""
        rows = yield from self.request("status")
        return next((row for row in rows if read_row(row).model == model), None)

    def load(self, model: str, priority: Any, wait: bool, timeout: float | None) -> Plan[Any]:
        """Load model; its status row. ``priority``: a Priority, its name, or None."""
        timeout = defaults.ENSURE_TIMEOUT_S if timeout is None else timeout
        name = getattr(priority, "name", priority)
        args = {"model": model, "priority": name.lower() if name else None, "wait": wait,
                "timeout": timeout}  # fmt: skip
        return (
            yield from self.request("load", args, timeout=timeout + defaults.LOAD_REPLY_MARGIN_S)
        )

    def unload(self, model: str) -> Plan[Any]:
        """Stop the model's worker and release its VRAM; its status row."""
        return (
            yield from self.request("unload", {"model": model}, timeout=defaults.UNLOAD_TIMEOUT_S)
        )

    def handle(self, model_id: str, timeout: float | None, make: Callable[[ModelCore], Any]) -> Any:
        """The driver's handle on model_id with that call deadline, made once by ``make``."""
        key = (model_id, self.timeout if timeout is None else timeout)
        with self._lock:
            handle = self._models.get(key)
            if handle is None:
                handle = self._models[key] = make(ModelCore(self, model_id, key[1]))
            return handle

    def close(self) -> Plan[None]:
        """Close every model handle's worker connection, then the control connection."""
        with self._lock:
            handles, self._models = list(self._models.values()), {}
        for handle in handles:
            yield from handle.core.close()
        yield from self.control.close()


@dataclass(slots=True)
class _Binding:
    """The worker a model's calls go to, while it lives."""

    pid: int
    client: CallCore
    checked_at: float  #: when the pid was last seen alive
    alive: Callable[[], bool]  #: whether pid still runs (asked between slices of waiting)


class ModelCore:
    """One model's calls, as plans: see the module docstring."""

    def __init__(self, supervisor: SupervisorCore, model_id: str, timeout: float) -> None:
        self.supervisor = supervisor
        self.model_id = model_id
        self.timeout = timeout
        self._transport = supervisor.transport
        self._binding: _Binding | None = None
        self._loading = False  # one caller loads the model; the others wait for its binding
        self._lock = threading.Lock()  # never held across a yield

    def call(self, op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Plan[Any]:
        """``op(*args, **kwargs)`` on the worker within this model's deadline; retried once
        on the respawned worker when idempotent, resent when the worker never read it."""
        deadline = _Deadline(self._transport.clock, self.timeout)
        retries = 1 if idempotent(op, kwargs) else 0
        while True:
            binding = self._fresh_binding()
            if binding is None:
                binding = yield from self._bind(deadline)
            try:
                return (
                    yield from binding.client.call(
                        op, {"args": list(args), "kwargs": kwargs},
                        timeout=max(deadline.remaining, defaults.MIN_CALL_TIMEOUT_S),
                        alive=binding.alive,
                    )
                )  # fmt: skip
            except PeerGone:
                loss = yield from self._lost(binding)
            if loss.unread and deadline.remaining > 0:
                continue  # never run: sending it again is safe for any call
            if retries == 0 or not loss.error.retryable or deadline.remaining <= 0:
                raise loss.error
            retries -= 1

    def stream(self, op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Plan[None]:
        """Emit the pieces of ``op.stream``; never retried mid-stream: a lost worker ends it
        with the typed error."""
        binding = yield from self._bind(_Deadline(self._transport.clock, self.timeout))
        try:
            yield from binding.client.stream(
                f"{op}.stream", {"args": list(args), "kwargs": kwargs}, timeout=self.timeout,
                alive=binding.alive,
            )  # fmt: skip
        except PeerGone:
            raise (yield from self._lost(binding)).error from None

    def close(self) -> Plan[None]:
        """Close the connection to the worker (the model stays loaded)."""
        with self._lock:
            binding, self._binding = self._binding, None
        if binding is not None:
            yield from binding.client.close()

    def _fresh_binding(self) -> _Binding | None:
        """The binding when its worker was seen alive within the last liveness slice (the
        hot path, without a plan); None when :meth:`_bind` must look further."""
        binding = self._binding
        if binding is not None and (
            self._transport.clock() - binding.checked_at < defaults.LIVENESS_SLICE_S
        ):
            return binding
        return None

    def _bind(self, deadline: _Deadline) -> Plan[_Binding]:
        """The live worker binding, loading the model when there is none."""
        while True:
            with self._lock:
                binding = self._binding
                claimed = binding is None and not self._loading
                self._loading = self._loading or claimed
            if binding is not None:
                # Checking the pid costs a syscall and a /proc read: once a liveness slice is
                # enough (a worker that dies in between is caught during the call).
                now = self._transport.clock()
                if now - binding.checked_at < defaults.LIVENESS_SLICE_S:
                    return binding
                if self._transport.alive(binding.pid):
                    binding.checked_at = now
                    return binding
                self._unbind(binding)  # unloaded or crashed since: ask again
                continue
            try:
                if deadline.remaining <= 0:
                    raise deadline.expired(f"loading {self.model_id!r}")
                if claimed:
                    return (yield from self._load(deadline))
            except TransportError as exc:
                if deadline.remaining > 0 or isinstance(exc, RequestTimeout):
                    raise
                # The supervisor gave up waiting at our deadline ("still starting"): to the
                # caller, whose deadline covers loading, that is a timeout like any other.
                raise deadline.expired(f"loading {self.model_id!r}") from exc
            finally:
                if claimed:
                    with self._lock:
                        self._loading = False
            # Another caller is loading the model: wait for its binding.
            yield functools.partial(self._transport.sleep, defaults.LIVENESS_SLICE_S)

    def _load(self, deadline: _Deadline) -> Plan[_Binding]:
        row = read_row(
            (
                yield from self.supervisor.load(
                    self.model_id, None, wait=True, timeout=deadline.remaining
                )
            )
        )
        if row.endpoint is None or row.pid is None:
            raise ProtocolError(
                f"the supervisor loaded {self.model_id!r} but named no worker", model=self.model_id
            )
        client = CallCore(
            row.endpoint, self._transport, timeout=self.timeout, pool=None,
            threshold=defaults.SHM_THRESHOLD_BYTES,
        )  # fmt: skip
        binding = _Binding(
            row.pid, client, self._transport.clock(),
            functools.partial(self._transport.alive, row.pid),
        )  # fmt: skip
        with self._lock:
            self._binding = binding
        return binding

    def _unbind(self, binding: _Binding) -> None:
        with self._lock:
            if self._binding is not binding:
                return  # another caller already let it go
            self._binding = None
        binding.client.abandon()  # the worker is gone: nobody to give blocks back to

    def _lost(self, binding: _Binding) -> Plan[Loss]:
        """Why the bound worker went away. The supervisor sees the exit through the process
        sentinel as we do; give it a moment to record how the worker ended."""
        self._unbind(binding)
        clock = self._transport.clock
        wait_until = clock() + defaults.CRASH_REPORT_WAIT_S
        while True:
            try:
                raw = yield from self.supervisor.row(self.model_id)
            except SupervisorUnavailable:
                raw = None
            row = read_row(raw) if raw is not None else None
            if row is None or row.pid != binding.pid or clock() > wait_until:
                return classify_loss(self.model_id, binding.pid, row)
            yield functools.partial(self._transport.sleep, defaults.CRASH_REPORT_POLL_S)
