"""``GPULifespanManager``: a FastAPI lifespan that owns a feature runner's service object.

On server start it constructs the service (``ServiceClass()``; an error there fails the start
at once), exposes it as ``app.state.service``, and runs its ``startup()`` (say, preloading a
model under a lease) while the server already answers ``/health`` with 503 "loading"; every
other request waits for the startup to finish. A startup that fails is fatal, not degraded:
the service's ``shutdown()`` runs at once (no lease is left behind), ``/health`` says
"failed", and the server stops with the error (``serve()`` exits non-zero). On SIGTERM,
SIGINT or idle shutdown, the service's ``shutdown()`` runs before the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

from mlsup.service.app_logic import RunnerPhase

__all__ = ["GPULifespanManager", "RunnerState"]

_log = logging.getLogger(__name__)


class RunnerState:
    """What the HTTP shell knows of its runner: phase, startup error, activity, stop hook.

    ``stop_server`` asks the server to exit: :func:`~mlsup.service.serve` sets it to stop its
    uvicorn server; under another ASGI server it sends SIGTERM to this process, which every
    server treats as "shut down gracefully".
    """

    def __init__(self, idle_shutdown_s: float | None = None) -> None:
        self.phase = RunnerPhase.STARTING
        self.error: BaseException | None = None
        self.idle_shutdown_s = idle_shutdown_s
        self.last_activity = 0.0
        self.in_flight = 0
        self.stop_server: Callable[[], None] = _sigterm_self
        #: Calls abandoned past their deadline (a thread cannot be stopped): awaited before
        #: the service shuts down, so nothing is freed under them.
        self.abandoned: set[asyncio.Future[Any]] = set()
        self._ready: asyncio.Event | None = None

    def abandon(self, call: asyncio.Future[Any]) -> None:
        """Stop waiting for ``call`` (cancelled), but keep it until it ends."""
        call.cancel()
        self.abandoned.add(call)
        call.add_done_callback(self.abandoned.discard)

    @property
    def ready(self) -> asyncio.Event:
        """Set once the startup ended (served or failed)."""
        if self._ready is None:
            self._ready = asyncio.Event()
        return self._ready

    def started(self) -> None:
        self.phase = RunnerPhase.READY
        self.last_activity = asyncio.get_running_loop().time()
        self.ready.set()

    def failed(self, error: BaseException) -> None:
        self.phase, self.error = RunnerPhase.FAILED, error
        self.ready.set()


def _sigterm_self() -> None:
    # Servers (uvicorn, hypercorn, gunicorn workers) handle SIGTERM as "shut down gracefully".
    # Without a handler (a test client, say) the signal would kill the process: stay up, and
    # let /health say why.
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.SIG_IGN, None):
        _log.warning("no server handles SIGTERM here: not stopping; /health reports the state")
        return
    signal.raise_signal(signal.SIGTERM)


class GPULifespanManager:
    """``create_app(title, lifespan=GPULifespanManager(MyService))``.

    ``ServiceClass`` is called without arguments; its optional ``startup()`` and
    ``shutdown()`` methods may be coroutines or plain functions.
    """

    def __init__(self, service_class: Callable[[], Any]) -> None:
        self.service_class = service_class

    def __call__(self, app: Any) -> contextlib.AbstractAsyncContextManager[None]:
        return self._lifespan(app)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Any) -> AsyncIterator[None]:
        runner = getattr(app.state, "runner", None)
        if runner is None:  # a plain FastAPI app, not one of create_app's
            runner = app.state.runner = RunnerState()
        service = self.service_class()
        app.state.service = service
        stopped = asyncio.Event()  # the service's shutdown ran (after a failed startup)
        startup = asyncio.create_task(self._start(service, runner, stopped))
        try:
            yield
        finally:
            runner.phase = RunnerPhase.STOPPING
            if not startup.done():
                startup.cancel()
            # _start handles its own errors; a cancellation ends it here.
            await asyncio.gather(startup, *runner.abandoned, return_exceptions=True)
            if not stopped.is_set():
                await _maybe_await(getattr(service, "shutdown", None))

    async def _start(self, service: Any, runner: RunnerState, stopped: asyncio.Event) -> None:
        try:
            await _maybe_await(getattr(service, "startup", None))
        except Exception as error:  # noqa: BLE001 - any failure is fatal, and reported
            _log.error("startup of %s failed; stopping", type(service).__name__, exc_info=error)
            runner.failed(error)
            try:
                await _maybe_await(getattr(service, "shutdown", None))
            finally:
                stopped.set()
                runner.stop_server()
            return
        runner.started()


async def _maybe_await(method: Callable[[], Any] | None) -> None:
    if method is None:
        return
    result = method()
    if inspect.isawaitable(result):
        await result
