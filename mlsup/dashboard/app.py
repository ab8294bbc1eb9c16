"""The dashboard on its own: a FastAPI app serving only ``/ui``, and a uvicorn runner."""

from __future__ import annotations

from pathlib import Path

import uvicorn
from fastapi import FastAPI
from fastapi.responses import RedirectResponse

from mlsup import defaults
from mlsup.dashboard.activity import LatencySource
from mlsup.dashboard.feed import Connect, DashboardFeed
from mlsup.dashboard.routes import build_router
from mlsup.runtime import runtime_dir

__all__ = ["PREFIX", "create_dashboard_app", "serve"]

#: Where the dashboard lives, on its own as under the gateway.
PREFIX = "/ui"


def create_dashboard_app(
    runtime: Path | None = None,
    *,
    connect: Connect | None = None,
    latency: LatencySource | None = None,
) -> FastAPI:
    """An app serving the dashboard at ``/ui`` (``/`` redirects there), for ``runtime``'s
    supervisor (default: this user's runtime directory)."""
    feed = DashboardFeed(runtime or runtime_dir(), connect=connect, latency=latency)
    router = build_router(feed)
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
