"""The dashboard under the gateway's ``/ui``, behind the same API key.

A browser cannot send ``Authorization: Bearer``, so ``/ui`` also accepts a session cookie, set by
a small login form at ``/ui/login`` when the right key is posted. The cookie is HttpOnly (page
scripts cannot read it), ``SameSite=Strict`` (other sites' pages do not send it) and scoped to
``/ui``: the API routes keep Bearer only. It holds an HMAC of the key, not the key itself, so a
copied cookie opens the dashboard but does not give the key for the API.
"""

from __future__ import annotations

import hashlib
import hmac
import html
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from mlsup.dashboard.activity import Histogram, histograms_from_metrics
from mlsup.dashboard.app import PREFIX, dashboard_router

__all__ = ["COOKIE", "gateway_latency", "mount_dashboard", "session_token"]

#: The name of the dashboard's session cookie.
COOKIE = "mlsup_ui"
_LOGIN = f"{PREFIX}/login"


def session_token(api_key: str) -> str:
    """The cookie value for ``api_key``: derived from it, so it changes when the key does."""
    return hmac.new(api_key.encode(), b"mlsup dashboard session", hashlib.sha256).hexdigest()


def _bearer_ok(request: Request, api_key: str) -> bool:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode(), api_key.encode()
    )


def _cookie_ok(request: Request, api_key: str) -> bool:
    cookie = request.cookies.get(COOKIE, "")
    return hmac.compare_digest(cookie.encode(), session_token(api_key).encode())


class _LoginRequiredError(Exception):
    """A /ui request without the cookie or the Bearer key."""


async def _ui_authorized(request: Request) -> None:
    api_key: str | None = request.app.state.api_key
    if api_key is None or _cookie_ok(request, api_key) or _bearer_ok(request, api_key):
        return
    raise _LoginRequiredError


def _login_page(error: str | None = None, status: int = 200) -> HTMLResponse:
    message = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mlsup dashboard: log in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font:15px system-ui,sans-serif;max-width:24rem;margin:4rem auto;padding:0 1rem}}
input{{width:100%;padding:.4rem;margin:.4rem 0;box-sizing:border-box}}
.error{{color:#b00020}}</style></head>
<body><h1>mlsup dashboard</h1>
<p>This gateway needs its API key (<code>[http] api_key</code> of mlsup.toml).</p>{message}
<form method="post" action="{_LOGIN}">
<label for="key">API key</label>
<input id="key" name="key" type="password" autocomplete="current-password" autofocus required>
<button type="submit">Log in</button></form></body></html>
"""
    return HTMLResponse(body, status, headers={"Cache-Control": "no-store"})


def _login_router() -> APIRouter:
    router = APIRouter()

    @router.get(_LOGIN, include_in_schema=False)
    async def login_form(request: Request) -> Response:
        if request.app.state.api_key is None:
            return RedirectResponse(f"{PREFIX}/", 303)
        return _login_page()

    @router.post(_LOGIN, include_in_schema=False)
    async def login(request: Request, key: Annotated[str, Form()] = "") -> Response:
        api_key: str | None = request.app.state.api_key
        if api_key is None:
            return RedirectResponse(f"{PREFIX}/", 303)
        if not hmac.compare_digest(key.encode(), api_key.encode()):
            return _login_page("Wrong API key.", 401)
        response = RedirectResponse(f"{PREFIX}/", 303)
        response.set_cookie(
            COOKIE, session_token(api_key), path=PREFIX, httponly=True, samesite="strict"
        )
        return response

    return router


def mount_dashboard(
    app: FastAPI, runtime: str | None, latency: Callable[[], dict[str, Histogram]]
) -> None:
    """Serve the dashboard at ``/ui`` of ``app`` (login at ``/ui/login``); ``latency`` gives
    each model's request-duration histogram (the gateway's), so the page shows p50/p99."""
    app.include_router(_login_router())
    router = dashboard_router(Path(runtime) if runtime else None, latency=latency)
    app.include_router(router, prefix=PREFIX, dependencies=[Depends(_ui_authorized)])

    @app.exception_handler(_LoginRequiredError)
    async def login_required(request: Request, exc: _LoginRequiredError) -> Response:
        path = request.url.path
        if path.startswith((f"{PREFIX}/api/", f"{PREFIX}/events", f"{PREFIX}/static/")):
            message = f"log in at {_LOGIN} or send 'Authorization: Bearer KEY'"
            body = {"error": {"type": "Unauthorized", "message": message}}
            return JSONResponse(body, 401, headers={"WWW-Authenticate": "Bearer"})
        return _login_page(status=401)


def gateway_latency(app: FastAPI) -> Callable[[], dict[str, Histogram]]:
    """The gateway's ``mlsup_request_duration_seconds`` per model, for the dashboard (nothing
    before the gateway has started)."""

    def latency() -> dict[str, Histogram]:
        gateway = getattr(app.state, "gateway", None)
        if gateway is None:
            return {}
        return histograms_from_metrics(gateway.metrics.duration.collect())

    return latency
