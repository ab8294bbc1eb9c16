"""A scripted supervisor and its workers, played on a :class:`FakeTransport`.

For testing code that calls supervised models (the proxy, or your feature through it) through
every way a worker can behave, in microseconds and without processes::

    transport = FakeTransport()
    fake = FakeSupervisor(transport)
    fake.add_model("probe", lambda op, args, kwargs: len(args[0]))
    fake.script("probe", Crash(), Answer(7))        # the next two requests meet these
    with mlsup.connect(fake.runtime, transport=transport) as sup:
        sup.model("probe").embed(["a"])              # crashed, retried on a new worker: 7

Acts: :class:`Answer`, :class:`Fail`, :class:`Stream`, :class:`Crash` (the worker read the
request, then died), :class:`Drain` (stopped on purpose before reading it), :class:`Preempt`,
:class:`Hang`, :class:`Stale` (a late reply to an older request comes first). A request with no
act left is answered by the model's ``serve(op, args, kwargs)``. The supervisor learns of a
death ``report_after`` (fake) seconds after it, as the real one does through its sentinel.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlsup.contracts import ExitReason
from mlsup.errors import MlsupError, ModelNotFound, TransportError
from mlsup.ipc.wire import Kind, Message
from mlsup.runtime import CONTROL_SOCKET
from mlsup.supervisor.process import describe_exit
from mlsup.testing.transport import FakeTransport

__all__ = [
    "Answer",
    "Crash",
    "Drain",
    "Fail",
    "FakeSupervisor",
    "Hang",
    "Preempt",
    "Stale",
    "Stream",
]

#: How a healthy worker answers: ``serve(op, args, kwargs)`` (an iterable for ``*.stream``).
Serve = Callable[[str, list[Any], dict[str, Any]], Any]


@dataclass(frozen=True)
class Answer:
    """Reply with value."""

    value: Any


@dataclass(frozen=True)
class Fail:
    """Reply with an error."""

    error: MlsupError


@dataclass(frozen=True)
class Crash:
    """Read the request, then die with exit_code (default: killed by SIGKILL)."""

    exit_code: int = -9
    report_after: float = 0.0


@dataclass(frozen=True)
class Drain:
    """Stopped on purpose (idle, unload) before reading the request: exit code 0."""

    reason: str = "idle for 300 s"
    report_after: float = 0.0


@dataclass(frozen=True)
class Preempt:
    """Drained to give the VRAM to a higher priority, before reading the request."""

    reason: str = "preempted by a higher priority"
    report_after: float = 0.0


@dataclass(frozen=True)
class Hang:
    """Read the request and never answer (the process lives on)."""


@dataclass(frozen=True)
class Stream:
    """Send items, then end: with the reply, with ``error``, or by dying (``crash``)."""

    items: tuple[Any, ...]
    error: MlsupError | None = None
    crash: Crash | None = None


@dataclass(frozen=True)
class Stale:
    """First a late reply (``value``) to an earlier request id, then go on with the script."""

    value: Any = "stale"


Act = Answer | Fail | Crash | Drain | Preempt | Hang | Stream | Stale


@dataclass
class _Model:
    serve: Serve
    script: deque[Act] = field(default_factory=deque)
    generation: int = 0
    pid: int | None = None
    endpoint: str | None = None
    state: str = "unloaded"
    exit_code: int | None = None
    reason: str | None = None
    exit_reason: ExitReason | None = None
    reported_at: float = 0.0  # when the supervisor learns of the last death
    previous_pid: int | None = None
    runs: int = 0  # requests a worker read and ran


class FakeSupervisor:
    """Control requests (``ping``, ``load``, ``status``, ``unload``, ``leases``, ``stop``) and
    scripted workers, on transport; connect with ``runtime=fake.runtime, transport=...``."""

    def __init__(self, transport: FakeTransport, runtime: str = "/fake/mlsup") -> None:
        self.transport = transport
        self.runtime = Path(runtime)
        self.models: dict[str, _Model] = {}
        self.loads = 0  #: ``load`` requests served
        self.load_takes = 0.0  #: (fake) seconds a load takes
        self._pids = itertools.count(1000)
        transport.listen(f"ipc://{self.runtime / CONTROL_SOCKET}", self._control)

    def add_model(self, name: str, serve: Serve) -> None:
        """A model whose healthy workers answer with ``serve(op, args, kwargs)``."""
        self.models[name] = _Model(serve)

    def script(self, name: str, *acts: Act) -> None:
        """The next requests to name's workers meet acts, one each, in order."""
        self.models[name].script.extend(acts)

    def runs(self, name: str) -> int:
        """How many requests name's workers read and ran (answered or not)."""
        return self.models[name].runs

    def row(self, name: str) -> dict[str, Any]:
        """The status row of name, as the supervisor would report it now."""
        model = self.models[name]
        pending = self.transport.now < model.reported_at  # the death is not yet noticed
        pid = model.previous_pid if pending else model.pid
        exit_code = None if pending else model.exit_code
        return {
            "model": name, "loader": "fake", "state": "ready" if pending else model.state,
            "pid": pid, "endpoint": model.endpoint, "generation": model.generation,
            "exit_code": exit_code, "exit_reason": None if pending else model.exit_reason,
            "reason": None if pending else model.reason,
            "last_exit": None if exit_code is None else describe_exit(exit_code),
            "error": None, "requests": model.runs,
        }  # fmt: skip

    # -- the control plane ----------------------------------------------------------------------

    def _control(self, request: Message, args: Any) -> list[Message]:
        try:
            result = self._operate(request.op, args)
        except MlsupError as exc:
            return [Message(Kind.ERROR, request.id, error=exc.to_wire())]
        return [Message(Kind.REPLY, request.id, args=result)]

    def _operate(self, op: str, args: Any) -> Any:
        if op == "ping":
            return {"pid": 1, "runtime": str(self.runtime)}
        if op == "status":
            return [self.row(name) for name in self.models]
        if op in ("leases", "stop"):
            return [] if op == "leases" else None
        name = args["model"]
        if name not in self.models:
            raise ModelNotFound(f"no model {name!r} in the fake manifest", model=name)
        if op == "load":
            self.loads += 1
            model = self.models[name]
            if self.load_takes > args["timeout"]:  # the real one gives up at the deadline
                self.transport.now += args["timeout"]
                raise TransportError(f"model {name!r} is still starting", model=name)
            self.transport.now += self.load_takes
            if model.pid is None or model.pid in self.transport.dead:
                self._spawn(name, model)
            return self.row(name)
        if op == "unload":
            self._end(
                self.models[name], exit_code=0, exit_reason=ExitReason.UNLOAD, reason="unloaded",
                state="unloaded",
            )  # fmt: skip
            return self.row(name)
        raise ModelNotFound(f"the fake supervisor has no operation {op!r}")

    def _spawn(self, name: str, model: _Model) -> None:
        model.generation += 1
        model.pid = next(self._pids)
        model.endpoint = f"ipc:///fake/{name}-{model.generation}"
        model.state = "ready"
        model.reported_at = 0.0
        self.transport.listen(model.endpoint, self._worker(model), pid=model.pid)

    def _end(
        self,
        model: _Model,
        *,
        exit_code: int,
        exit_reason: ExitReason,
        reason: str | None,
        state: str,
        after: float = 0.0,
    ) -> None:
        if model.pid is not None:
            self.transport.kill(model.pid)
        model.previous_pid, model.pid = model.pid, None
        model.exit_code, model.exit_reason = exit_code, exit_reason
        model.reason, model.state = reason, state
        model.reported_at = self.transport.now + after

    # -- the workers ----------------------------------------------------------------------------

    def _worker(self, model: _Model) -> Callable[[Message, Any], list[Message] | None]:
        def handle(request: Message, args: Any) -> list[Message] | None:
            act = model.script.popleft() if model.script else None
            if isinstance(act, Drain | Preempt):
                self._end(
                    model, exit_code=0,
                    exit_reason=ExitReason.IDLE if isinstance(act, Drain) else ExitReason.PREEMPTED,
                    reason=act.reason, state="unloaded", after=act.report_after,
                )  # fmt: skip
                return None
            if isinstance(act, Stale):
                late = Message(Kind.REPLY, request.id - 1, args=act.value)
                return [late, *(handle(request, args) or [])]
            model.runs += 1
            if isinstance(act, Crash):
                self._crash(model, act)
                return None
            if isinstance(act, Hang):
                return None
            if isinstance(act, Fail):
                return [Message(Kind.ERROR, request.id, error=act.error.to_wire())]
            if isinstance(act, Stream):
                return self._stream(model, request, act)
            if isinstance(act, Answer):
                return [Message(Kind.REPLY, request.id, args=act.value)]
            result = model.serve(request.op, args["args"], args["kwargs"])
            if request.op.endswith(".stream"):
                return self._stream(model, request, Stream(tuple(result)))
            return [Message(Kind.REPLY, request.id, args=result)]

        return handle

    def _crash(self, model: _Model, act: Crash) -> None:
        self._end(
            model, exit_code=act.exit_code, exit_reason=ExitReason.CRASH, reason=None,
            state="starting", after=act.report_after,
        )  # fmt: skip

    def _stream(self, model: _Model, request: Message, act: Stream) -> list[Message]:
        items = [Message(Kind.ITEM, request.id, args=item) for item in act.items]
        if act.crash is not None:
            self._crash(model, act.crash)
            return items
        if act.error is not None:
            return [*items, Message(Kind.ERROR, request.id, error=act.error.to_wire())]
        return [*items, Message(Kind.REPLY, request.id)]
