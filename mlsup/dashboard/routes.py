"""The dashboard's HTTP routes: a thin shell over :class:`~mlsup.dashboard.feed.DashboardFeed`.

=========================================  ====================================================
``GET  {prefix}/``                         the page (``{prefix}`` redirects here)
``GET  {prefix}/static/{name}``            its CSS and JavaScript, served from the package
``GET  {prefix}/events``                   server-sent events: the snapshot, when it changes
``GET  {prefix}/api/snapshot``             the current snapshot, as JSON
``POST {prefix}/api/models/{id}/load``     start loading (does not wait for READY)
``POST {prefix}/api/models/{id}/unload``   drain the worker and release its lease
``GET  {prefix}/api/models/{id}/log``      the tail of its worker log (``?lines=N``)
=========================================  ====================================================

The two POSTs require the header ``X-Mlsup-Dashboard: 1``: a page on another origin cannot set
it without a CORS preflight, which this server never grants, so a hostile web page open in the
same browser cannot unload models through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse

from mlsup import defaults
from mlsup.dashboard.feed import DashboardFeed
from mlsup.dashboard.logs import check_model_id, read_log_tail
from mlsup.dashboard.view import read_row
from mlsup.errors import (
    ConfigError,
    MlsupError,
    ModelNotFound,
    TransportError,
)
from mlsup.proxy import AsyncSupervisorProxy
from mlsup.supervisor.config import RuntimePaths

__all__ = ["ACTION_HEADER", "STATIC_FILES", "build_router"]

#: The header the page's buttons send (see the module docstring).
ACTION_HEADER = "X-Mlsup-Dashboard"
#: The only files served from ``static/``, with their media types.
STATIC_FILES = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
}
_NO_CACHE = {"Cache-Control": "no-cache"}


def _asset(name: str) -> bytes:
    return (resources.files("mlsup.dashboard") / "static" / name).read_bytes()


def _error(exc: MlsupError) -> JSONResponse:
    """One boundary from typed errors to HTTP statuses."""
    if isinstance(exc, ModelNotFound):
        status = 404
    elif isinstance(exc, ConfigError):
        status = 400
    elif isinstance(exc, TransportError):
        status = 503
    else:
        status = 409
    return JSONResponse({"error": exc.to_wire()}, status_code=status)


def _forbidden() -> JSONResponse:
    message = f"dashboard actions need the header {ACTION_HEADER}: 1 (sent by the page itself)"
    return JSONResponse({"error": {"type": "Forbidden", "message": message}}, status_code=403)


async def _event_stream(feed: DashboardFeed) -> AsyncIterator[bytes]:
    """The snapshot now (if any), then each newer one; a comment line when idle."""
    seen = feed.version
    if seen:
        yield b"data: " + feed.body + b"\n\n"
    while True:
        try:
            item = await feed.next_body(seen, defaults.DASHBOARD_KEEPALIVE_S)
        except EOFError:
            return
        if item is None:
            yield b": keep-alive\n\n"
            continue
        seen, body = item
        yield b"data: " + body + b"\n\n"


async def _act(
    feed: DashboardFeed,
    request: Request,
    model: str,
    action: Callable[[AsyncSupervisorProxy], Awaitable[Any]],
) -> JSONResponse:
    """Check the header and the model id, run a control operation, poll at once after it."""
    if request.headers.get(ACTION_HEADER) != "1":
        return _forbidden()
    try:
        check_model_id(model, feed.known)
        proxy = await feed.proxy()
        feed.poke()  # the page shows the transition (draining, leasing) while it runs
        row = await action(proxy)
    except MlsupError as exc:
        return _error(exc)
    feed.poke()
    return JSONResponse({"model": model, "state": read_row(row).state})


def _add_page_routes(router: APIRouter) -> None:
    page = _asset("index.html")
    assets = {name: _asset(name) for name in STATIC_FILES}

    @router.get("", include_in_schema=False)
    async def bare(request: Request) -> RedirectResponse:
        return RedirectResponse(str(request.url_for("dashboard_page")))

    @router.get("/", name="dashboard_page", include_in_schema=False)
    async def index() -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=_NO_CACHE)

    @router.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in assets:
            return JSONResponse({"error": {"message": f"no asset {name[:64]!r}"}}, 404)
        return Response(assets[name], media_type=STATIC_FILES[name], headers=_NO_CACHE)


def _add_api_routes(router: APIRouter, feed: DashboardFeed) -> None:
    log_dir = RuntimePaths(feed.runtime).logs

    @router.get("/api/snapshot")
    async def snapshot() -> Response:
        """The page's current snapshot (what ``/events`` last sent)."""
        return Response(feed.body or b"null", media_type="application/json")

    @router.get("/events")
    async def events() -> StreamingResponse:
        """Server-sent events: a ``data:`` line with the snapshot whenever it changes."""
        headers = {**_NO_CACHE, "X-Accel-Buffering": "no"}
        return StreamingResponse(
            _event_stream(feed), media_type="text/event-stream", headers=headers
        )

    @router.post("/api/models/{model}/load")
    async def load(model: str, request: Request) -> JSONResponse:
        """Ask the supervisor to load ``model`` (returns at once; the page shows the progress)."""
        return await _act(feed, request, model, lambda proxy: proxy.load(model, wait=False))

    @router.post("/api/models/{model}/unload")
    async def unload(model: str, request: Request) -> JSONResponse:
        """Unload ``model``: its worker drains and its lease is released."""
        return await _act(feed, request, model, lambda proxy: proxy.unload(model))

    @router.get("/api/models/{model}/log")
    async def log(model: str, lines: int = defaults.DASHBOARD_LOG_LINES) -> JSONResponse:
        """The last ``lines`` lines of ``model``'s worker log."""
        try:
            tail = await asyncio.to_thread(read_log_tail, log_dir, model, feed.known, lines)
        except MlsupError as exc:
            return _error(exc)
        return JSONResponse(dataclasses.asdict(tail))


def build_router(feed: DashboardFeed) -> APIRouter:
    """The routes of the dashboard over ``feed``; its lifespan runs the feed's poller."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        poller = asyncio.create_task(feed.run(), name="mlsup-dashboard-poller")
        try:
            yield
        finally:
            await feed.close()
            await poller  # a failure of the poller surfaces here, at shutdown, not silently

    router = APIRouter(lifespan=lifespan)
    _add_page_routes(router)
    _add_api_routes(router, feed)
    return router
