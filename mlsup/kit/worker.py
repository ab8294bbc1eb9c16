"""The worker process: one model, loaded with the kit's loader, served over the IPC bridge.

The supervisor starts :func:`run_worker` in a fresh process (forked from a template that has
already imported the heavy runtimes) with plain data only: the model's spec and where to
report. The worker then:

1. becomes the leader of its own process group (the supervisor kills the whole group), sends
   its output to the model's log file, and pins itself to the leased GPU;
2. loads the model, reporting progress to the supervisor's control socket;
3. binds its own socket and reports READY with the memory it measured;
4. serves requests one at a time, and heartbeats (busy/idle, requests served, memory): once
   per interval, and soon after each request, so that ``mlsup status`` counts what it served;
5. on SIGTERM finishes the request in hand and exits; on out-of-memory reports it and exits
   with :attr:`~mlsup.contracts.WorkerExit.OOM`; the instant the supervisor is gone, exits
   (:mod:`mlsup.kit.lifeline`); past its lease's expiry without a renewal from the supervisor
   (each heartbeat's reply says until when), refuses calls and exits with
   :attr:`~mlsup.contracts.WorkerExit.LEASE_EXPIRED`: it never serves without a lease.

What it is started with and what it reports are the typed messages of :mod:`mlsup.contracts`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import msgspec
import psutil

from mlsup import defaults
from mlsup.contracts import (
    FailureKind,
    HeartbeatReply,
    WorkerConfig,
    WorkerExit,
    WorkerFailed,
    WorkerHeartbeat,
    WorkerProgress,
    WorkerReady,
    from_wire,
    to_wire,
)
from mlsup.errors import LeaseLost, MlsupError, ModelOOM, ProtocolError, TransportError

# Imported here, not in the functions that use them: the worker template imports this module
# before it forks, so a worker starts with them imported (30 ms of CPU per start otherwise).
from mlsup.ipc.client import Client
from mlsup.ipc.server import Server
from mlsup.kit.lifeline import LeaseDeadline, die_with_parent, watch_deadline, watch_exit
from mlsup.kit.load_progress import LoadMeter, LoadProgress, report_while
from mlsup.kit.manifest import ModelSpec
from mlsup.kit.op_args import check_arguments
from mlsup.process_identity import process_alive

__all__ = ["OPERATIONS", "STREAMING", "run_worker"]

#: Methods of loaded models that a worker serves, when the model has them.
OPERATIONS = (
    "chat",
    "complete",
    "generate",
    "embed",
    "tokenize",
    "generate_image",
    "transcribe",
    "run",
)
#: Methods that also stream (served as ``<name>.stream`` with ``stream=True``).
STREAMING = ("chat", "complete", "generate")


def _memory_mb() -> int:
    """Device memory this process uses: CUDA's allocator if it is in use, else its RSS."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        return int(torch.cuda.max_memory_reserved() // (1 << 20))
    return int(psutil.Process().memory_info().rss // (1 << 20))


class _Worker:
    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.identity = {
            "model": config.model_id,
            "generation": config.generation,
            "token": config.token,
        }
        self.control = Client(config.control, timeout=defaults.CONTROL_TIMEOUT_S)
        self.requests = 0  #: calls served so far
        self.busy = False
        self.busy_since = 0.0
        self.last_request = time.monotonic()
        self.served = threading.Event()  #: set after each call: heartbeat soon
        self.oom: ModelOOM | None = None
        self.server: Any = None
        self.lease = LeaseDeadline(config.lease_until)

    def report(self, op: str, shape: type[msgspec.Struct], **facts: Any) -> None:
        """Report to the supervisor; its answer says until when the lease is renewed."""
        message = shape(**self.identity, **facts)
        reply = self.control.call(op, to_wire(message))
        self.lease.extend(from_wire(reply, HeartbeatReply, what=f"reply to {op}"))

    def load(self) -> tuple[Any, Any]:
        from mlsup.kit.loaders import get_loader

        spec = ModelSpec.from_dict(self.config.model, source="supervisor")
        stage = f"loading {spec.path} with {spec.loader}"
        meter = LoadMeter(spec.path)

        def progress(done: LoadProgress) -> None:
            with contextlib.suppress(MlsupError):  # a missed report only delays the bar
                self.report(
                    "worker.progress",
                    WorkerProgress,
                    stage=stage,
                    bytes_read=done.read,
                    bytes_total=done.total,
                )

        progress(LoadProgress(0, meter.total))
        loader = get_loader(spec.loader)()
        options = dict(spec.options)
        stop_reports = report_while(meter, progress)
        try:
            return loader, loader.load(spec, **options)
        finally:
            stop_reports()

    def handler(self, op: str, method: Callable[..., Any], stream: bool) -> Callable[[Any], Any]:
        served = self.served

        def handle(args: Any) -> Any:
            positional, keywords = _call_arguments(args)
            check_arguments(op, positional, keywords)  # before the runtime converts anything
            if stream:
                keywords["stream"] = True
            now = time.monotonic()
            if self.lease.expired(now):
                raise self.lease_expired()
            self.busy_since = now
            self.busy = True
            try:
                return method(*positional, **keywords)
            except ModelOOM as exc:
                # Reply with the error, then leave: the supervisor re-leases more and respawns.
                self.oom = exc
                self.server.stop(timeout=0)
                raise
            finally:
                # Counted before the reply is sent: a caller that got its answer and then
                # asks the supervisor sees its call counted once this heartbeat lands.
                self.requests += 1
                self.busy = False
                self.last_request = time.monotonic()
                if not served.is_set():  # set already: the heartbeat has yet to take it
                    served.set()

        return handle

    def heartbeat_forever(self, stop: threading.Event) -> None:
        """Report every ``heartbeat_s``, and soon after a call (coalescing bursts)."""
        while not stop.is_set():
            self.served.wait(self.config.heartbeat_s)
            self.served.clear()
            if stop.is_set():
                return
            if not process_alive(self.config.supervisor_pid):
                print("supervisor is gone; exiting", flush=True)
                self.server.stop(timeout=0)
                return
            try:
                self.report(
                    "worker.heartbeat",
                    WorkerHeartbeat,
                    busy=self.busy,
                    requests=self.requests,
                    idle_s=time.monotonic() - self.last_request,
                    busy_s=time.monotonic() - self.busy_since if self.busy else 0.0,
                    memory_mb=_memory_mb(),
                )
            except TransportError:
                continue  # a slow supervisor: the pid check above decides when it is gone
            except MlsupError as exc:  # it no longer knows us (a newer generation took over)
                print(f"supervisor refused heartbeat: {exc}; exiting", flush=True)
                self.server.stop(timeout=0)
                return
            stop.wait(defaults.HEARTBEAT_NUDGE_MIN_S)  # under load, not one report per call

    def lease_expired(self) -> LeaseLost:
        """The error of a call that came after the lease's known expiry."""
        return LeaseLost(
            f"the worker of {self.config.model_id!r} stopped serving: its lease went unrenewed "
            "past its expiry (the supervisor is gone or stalled); retry, and the supervisor "
            "starts a new one",
            model=self.config.model_id,
        )


def _exit_when_lease_expires(worker: _Worker) -> None:
    """Leave at the lease's expiry, even in the middle of a call: its VRAM may be someone
    else's from then on."""
    print(f"{worker.lease_expired()}; exiting", flush=True)
    os._exit(WorkerExit.LEASE_EXPIRED)


def _exit_with_supervisor(pid: int) -> None:
    print(f"supervisor pid {pid} is gone; exiting", flush=True)
    os._exit(WorkerExit.OK)


def _cap_torch(config: WorkerConfig) -> None:
    """Hold torch's CUDA allocator to the lease (where torch and CUDA are present): beyond it,
    allocations fail as out-of-memory, which the supervisor answers with a bigger lease."""
    torch = sys.modules.get("torch")
    leased = config.env.get("MLSUP_LEASED_MB")
    if torch is None or leased is None or not torch.cuda.is_available():
        return
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, int(leased) * (1 << 20) / total), 0)


def _call_arguments(args: Any) -> tuple[list[Any], dict[str, Any]]:
    if args is None:
        return [], {}
    if not isinstance(args, dict):
        return [args], {}
    positional = args.get("args", [])
    keywords = args.get("kwargs", {})
    if not isinstance(positional, list) or not isinstance(keywords, dict):
        raise ProtocolError("call arguments must be {'args': [...], 'kwargs': {...}}")
    return positional, dict(keywords)


def _prepare_process(config: WorkerConfig) -> None:
    os.setsid()  # our own process group: the supervisor terminates all of it at once
    log = os.open(config.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    os.environ.update(config.env)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle
    die_with_parent()  # the template, which ends with the supervisor
    watch_exit(config.supervisor_pid, lambda: _exit_with_supervisor(config.supervisor_pid))


def run_worker(data: dict[str, Any]) -> None:
    """Entry point of a worker process, started with a :class:`~mlsup.contracts.WorkerConfig`
    as plain data; exits the process when done."""
    config = from_wire(data, WorkerConfig, what="worker config")
    _prepare_process(config)
    print(f"worker {os.getpid()} for {config.model_id} (generation {config.generation})")
    worker = _Worker(config)
    watch_deadline(worker.lease, lambda: _exit_when_lease_expires(worker))
    _cap_torch(config)
    started = time.monotonic()
    try:
        loader, model = worker.load()
    except ModelOOM as exc:
        _report_failure(worker, FailureKind.OOM, exc)
        os._exit(WorkerExit.OOM)
    except Exception as exc:  # noqa: BLE001 - anything a loader raises ends this worker
        _report_failure(worker, FailureKind.LOAD, exc)
        os._exit(WorkerExit.LOAD_ERROR)

    server = Server(config.endpoint, max_header_bytes=config.max_message_bytes)
    worker.server = server
    served = []
    for name in OPERATIONS:
        method = getattr(model, name, None)
        if callable(method):
            server.register(name, worker.handler(name, method, stream=False))
            served.append(name)
            if name in STREAMING:
                server.register(
                    f"{name}.stream", worker.handler(name, method, stream=True), stream=True
                )
    server.register("ping", lambda _: os.getpid())
    signal.signal(signal.SIGTERM, lambda *_: server.stop(timeout=0))
    server.bind()
    load_s = time.monotonic() - started
    worker.report(
        "worker.ready",
        WorkerReady,
        endpoint=server.endpoint,
        pid=os.getpid(),
        memory_mb=_memory_mb(),
        operations=served,
        load_s=load_s,
    )
    print(f"ready in {load_s:.2f} s on {server.endpoint}; serves {', '.join(served)}", flush=True)
    stop_heartbeat = threading.Event()  # with worker.served set too, to wake it
    heartbeat = threading.Thread(
        target=worker.heartbeat_forever, args=(stop_heartbeat,), daemon=True
    )
    heartbeat.start()
    try:
        server.serve()
    finally:
        stop_heartbeat.set()
        worker.served.set()
        server.close()
        loader.unload()
    if worker.oom is not None:
        _report_failure(worker, FailureKind.OOM, worker.oom)
        os._exit(WorkerExit.OOM)
    print("stopped", flush=True)
    worker.control.close()
    os._exit(WorkerExit.OK)


def _report_failure(worker: _Worker, kind: FailureKind, exc: BaseException) -> None:
    traceback.print_exception(exc)
    try:
        worker.report(
            "worker.failed", WorkerFailed, kind=kind, message=str(exc), memory_mb=_memory_mb()
        )
    except MlsupError as report_error:
        print(f"could not report the failure: {report_error}", flush=True)
    worker.control.close()
