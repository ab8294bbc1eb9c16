"""A live web dashboard of the supervisor: who holds which GPU, which models run, what they do.

Served by the gateway at ``/ui`` (same address and API key)::

    app.include_router(dashboard_router(runtime=paths.root), prefix="/ui",
                       dependencies=[api_key_dependency])

or on its own, before or without a gateway::

    python -m mlsup.dashboard --listen 127.0.0.1:8011      # then open http://127.0.0.1:8011/ui

The page is plain HTML, CSS and JavaScript shipped in the package (no CDN, no build step), kept
live by server-sent events (see :mod:`mlsup.dashboard.feed` for why).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter

from mlsup.dashboard.activity import Histogram, LatencySource
from mlsup.dashboard.app import create_dashboard_app, serve
from mlsup.dashboard.feed import Connect, DashboardFeed
from mlsup.dashboard.routes import build_router
from mlsup.runtime import runtime_dir

__all__ = [
    "Connect",
    "DashboardFeed",
    "Histogram",
    "LatencySource",
    "create_dashboard_app",
    "dashboard_router",
    "serve",
]


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
    :class:`Histogram` (the gateway's), without which the page says latency is not measured.
    The router's lifespan runs the poller: FastAPI merges it into the app's when included.
    """
    feed = DashboardFeed(runtime or runtime_dir(), connect=connect, latency=latency)
    return build_router(feed)
