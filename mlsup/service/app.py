"""``create_app``: the FastAPI app of a feature runner (the seed's ``lilith-fastapi-service-base``).

::

    app = create_app(title="My ML Service", lifespan=GPULifespanManager(MyMLService))

gives ``GET /health`` and ``POST /chat`` (see :mod:`mlsup.service.app_logic` for what they
answer), JSON errors ``{"error": {"type", "message"}}`` for every failure, CORS for local
origins, and optional idle shutdown. The routes only translate HTTP to the service's calls and
errors to status codes; the decisions live in :mod:`~mlsup.service.app_logic`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from mlsup import defaults
from mlsup.errors import MlsupError
from mlsup.kit.managed_model import in_thread
from mlsup.service.app_lifespan import GPULifespanManager, RunnerState
from mlsup.service.app_logic import (
    ChatRequest,
    RunnerPhase,
    chat_call,
    counts_as_activity,
    error_reply,
    health,
    idle_due,
)

__all__ = ["LOCAL_ORIGINS", "create_app"]

#: Origins allowed by default: pages served from this machine, on any port.
LOCAL_ORIGINS = r"http://(localhost|127\.0\.0\.1)(:\d+)?"

Lifespan = Callable[[Any], contextlib.AbstractAsyncContextManager[Any]]

_log = logging.getLogger(__name__)


def create_app(
    title: str,
    lifespan: Lifespan | None = None,
    *,
    cors_origins: Sequence[str] | None = None,
    idle_shutdown_s: float | None = None,
    request_timeout_s: float = defaults.SERVICE_REQUEST_TIMEOUT_S,
    startup_wait_s: float = defaults.SERVICE_STARTUP_WAIT_S,
) -> FastAPI:
    """A FastAPI app for a feature runner.

    ``lifespan``: usually ``GPULifespanManager(ServiceClass)``. ``cors_origins``: the origins
    browsers may call from (default: ``http://localhost:*`` and ``http://127.0.0.1:*``).
    ``idle_shutdown_s``: after that long without a request (``/health`` and ``/metrics`` do
    not count) the app runs its lifespan shutdown and the server exits 0.
    ``request_timeout_s`` bounds one ``/chat`` call (504 past it); ``startup_wait_s`` bounds
    how long a request waits for the service's startup (503 past it).
    """
    for name, value in (
        ("idle_shutdown_s", idle_shutdown_s),
        ("request_timeout_s", request_timeout_s),
        ("startup_wait_s", startup_wait_s),
    ):
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
    runner = RunnerState(idle_shutdown_s)

    @contextlib.asynccontextmanager
    async def runner_lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if lifespan is not None:
                await stack.enter_async_context(lifespan(app))
            if not isinstance(lifespan, GPULifespanManager):
                runner.started()  # nothing reports a startup of its own
            watcher = asyncio.create_task(_watch_idle(runner)) if idle_shutdown_s else None
            try:
                yield
            finally:
                runner.phase = RunnerPhase.STOPPING
                if watcher is not None:
                    watcher.cancel()
                    await asyncio.gather(watcher, return_exceptions=True)

    app = FastAPI(title=title, lifespan=runner_lifespan)
    app.state.runner = runner
    app.state.service = None
    app.add_middleware(_ActivityMiddleware, runner=runner)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(cors_origins or []),
        allow_origin_regex=LOCAL_ORIGINS if cors_origins is None else None,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Content-Type", "Authorization"],
    )
    _add_error_handlers(app)

    @app.get("/health")
    async def health_route(request: Request) -> JSONResponse:
        """503 while starting, 200 with ``model_loaded`` once started."""
        code, body = health(runner.phase, request.app.state.service, runner.error)
        return JSONResponse(body, status_code=code)

    @app.post("/chat")
    async def chat_route(body: ChatRequest, request: Request) -> Any:
        """Answer ``{"messages": [...], ...options}`` with ``{"content": text}``."""
        unavailable = await _wait_started(runner, startup_wait_s)
        if unavailable is not None:
            return unavailable
        call, args, kwargs = chat_call(request.app.state.service, body)
        result = await _within(runner, _call(call, args, kwargs), request_timeout_s)
        return {"content": result if isinstance(result, str) else str(result)}

    return app


async def _call(call: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A coroutine function is awaited; a plain one (it may block, as a model call does) runs
    in a worker thread, so that the loop keeps serving /health and renewing leases."""
    if inspect.iscoroutinefunction(call):
        return await call(*args, **kwargs)
    result = await in_thread(call, *args, **kwargs)
    return await result if inspect.isawaitable(result) else result


async def _within(runner: RunnerState, work: Coroutine[Any, Any, Any], timeout_s: float) -> Any:
    """``await work`` for at most ``timeout_s`` seconds, then :class:`TimeoutError`. Unlike
    ``wait_for`` it does not wait for a cancelled call to end (a model call in a thread ends
    only when it ends): the runner keeps the call until then."""
    call = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait({call}, timeout=timeout_s)
    except asyncio.CancelledError:  # the client went away
        runner.abandon(call)
        raise
    if not done:
        runner.abandon(call)
        raise TimeoutError(f"the call did not finish within {timeout_s:g} s; retry later")
    return call.result()


async def _wait_started(runner: RunnerState, wait_s: float) -> JSONResponse | None:
    """None once the service started; a 503 answer if it is still starting, failed or stopping."""
    if runner.phase is RunnerPhase.STARTING:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(runner.ready.wait(), wait_s)
    if runner.phase is RunnerPhase.READY:
        return None
    messages = {
        RunnerPhase.STARTING: f"the runner is still starting after {wait_s:g} s; retry later",
        RunnerPhase.FAILED: f"the runner's startup failed: {runner.error}",
        RunnerPhase.STOPPING: "the runner is shutting down",
    }
    return JSONResponse(
        {"error": {"type": "Unavailable", "message": messages[runner.phase]}},
        status_code=503,
        headers={"Retry-After": str(defaults.SERVICE_RETRY_AFTER_S)},
    )


def _add_error_handlers(app: FastAPI) -> None:
    """Every failure answers JSON ``{"error": {"type", "message"}}``, never an HTML page."""

    async def invalid_body(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error.get('loc', ()))}: {error.get('msg', '')}"
            for error in exc.errors()
        )
        return _json(422, "InvalidRequest", problems or "the request body is invalid")

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        return _json(exc.status_code, "HTTPError", str(exc.detail), dict(exc.headers or {}))

    async def served_error(request: Request, exc: Exception) -> JSONResponse:
        reply = error_reply(exc)
        if reply.status == 500:
            _log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse(reply.body(), status_code=reply.status, headers=reply.headers)

    app.add_exception_handler(RequestValidationError, invalid_body)
    app.add_exception_handler(HTTPException, http_error)
    for kind in (MlsupError, asyncio.TimeoutError, TimeoutError, Exception):
        app.add_exception_handler(kind, served_error)


def _json(
    status: int, kind: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"type": kind, "message": message}}, status_code=status, headers=headers
    )


class _ActivityMiddleware:
    """Counts requests in flight and the time of the last one (probes excluded)."""

    def __init__(self, app: ASGIApp, runner: RunnerState) -> None:
        self.app = app
        self.runner = runner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not counts_as_activity(scope["path"]):
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        self.runner.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.runner.in_flight -= 1
            self.runner.last_activity = loop.time()


async def _watch_idle(runner: RunnerState) -> None:
    """Stop the server once it has been idle for ``runner.idle_shutdown_s`` seconds."""
    assert runner.idle_shutdown_s is not None
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(min(defaults.SERVICE_IDLE_CHECK_S, runner.idle_shutdown_s))
        if runner.phase is RunnerPhase.READY and idle_due(
            last_activity=runner.last_activity,
            now=loop.time(),
            idle_s=runner.idle_shutdown_s,
            in_flight=runner.in_flight,
        ):
            _log.info("idle for %g s: shutting down", runner.idle_shutdown_s)
            runner.stop_server()
            return
