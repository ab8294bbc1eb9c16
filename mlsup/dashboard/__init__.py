"""A live web dashboard of the supervisor: who holds which GPU, which models run, what they do.

Served by the gateway at ``/ui`` (same address and API key)::

    app.include_router(dashboard_router(runtime=paths.root), prefix="/ui",
                       dependencies=[api_key_dependency])

or on its own, before or without a gateway::

    mlsup dashboard --listen 127.0.0.1:8011      # then open http://127.0.0.1:8011/ui

The page is plain HTML, CSS and JavaScript shipped in the package (no CDN, no build step), kept
live by server-sent events (see :mod:`mlsup.dashboard.feed` for why). Names are imported on
first use, so ``mlsup --help`` works without FastAPI installed (the ``gateway`` extra).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlsup.lazy import lazy_exports

if TYPE_CHECKING:
    from mlsup.dashboard.activity import Histogram, LatencySource, histograms_from_metrics
    from mlsup.dashboard.app import create_dashboard_app, dashboard_router, serve
    from mlsup.dashboard.feed import Connect, DashboardFeed

#: Public name -> module that defines it.
_LAZY = {
    "Histogram": "mlsup.dashboard.activity",
    "LatencySource": "mlsup.dashboard.activity",
    "histograms_from_metrics": "mlsup.dashboard.activity",
    "create_dashboard_app": "mlsup.dashboard.app",
    "dashboard_router": "mlsup.dashboard.app",
    "serve": "mlsup.dashboard.app",
    "Connect": "mlsup.dashboard.feed",
    "DashboardFeed": "mlsup.dashboard.feed",
}

__all__ = [
    "Connect",
    "DashboardFeed",
    "Histogram",
    "LatencySource",
    "create_dashboard_app",
    "dashboard_router",
    "histograms_from_metrics",
    "serve",
]


__getattr__ = lazy_exports(__name__, _LAZY)
