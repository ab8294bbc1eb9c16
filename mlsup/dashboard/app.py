"""The dashboard on its own: a FastAPI app serving only ``/ui``, and a uvicorn runner."""

from __future__ import annotations

from pathlib import Path

import uvicorn
from fastapi import APIRouter, FastAPI
from fastapi.responses import RedirectResponse

from mlsup import defaults
from mlsup.dashboard.activity import LatencySource
from mlsup.dashboard.feed import Connect, DashboardFeed
from mlsup.dashboard.routes import build_router
from mlsup.runtime import runtime_dir

__all__ = ["PREFIX", "create_dashboard_app", "dashboard_router", "serve"]

#: Where the dashboard lives, on its own as under the gateway.
PREFIX = "/ui"


def dashboard_router(
    runtime: Path | None = None,
    *,
    connect: Connect | None = None,
    latency: LatencySource | None = None,
) -> APIRouter:
    """The dashboard's routes, to include under a prefix (``/ui``) of any FastAPI app.

    ``runtime`` is the supervisor's runtime directory (default: this user's); ``connect`` makes
    the proxy the dashboard polls and acts through (default: ``mlsup.aconnect(runtime)``; the
    dashboard closes what it returns); ``latency`` returns each model's cumulative latency
    :class:`~mlsup.dashboard.activity.Histogram` (the gateway's), without which the page says
    latency is not measured. The router's lifespan runs the poller: FastAPI merges it into the
    app's when the router is included.
    """
    feed = DashboardFeed(runtime or runtime_dir(), connect=connect, latency=latency)
    return build_router(feed)


def create_dashboard_app(
    runtime: Path | None = None,
    *,
    connect: Connect | None = None,
    latency: LatencySource | None = None,
) -> FastAPI:
    """An app serving the dashboard at ``/ui`` (``/`` redirects there), for ``runtime``'s
    supervisor (default: this user's runtime directory)."""
    router = dashboard_router(runtime, connect=connect, latency=latency)
    app = FastAPI(title="mlsup dashboard", openapi_url=None)  # include_router adds its lifespan
    app.include_router(router, prefix=PREFIX)

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/")

    return app


def serve(app: FastAPI, host: str, port: int) -> None:
    """Run ``app`` with uvicorn until SIGINT/SIGTERM. Open event streams are given
    ``DASHBOARD_SHUTDOWN_GRACE_S`` to end: an ``EventSource`` never closes by itself."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=defaults.DASHBOARD_SHUTDOWN_GRACE_S,
    )
    uvicorn.Server(config).run()
