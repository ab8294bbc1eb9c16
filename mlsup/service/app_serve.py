"""``serve``: run a feature runner's app with uvicorn on the port its ``services.yaml`` declares.

A runner's ``__main__`` is then two lines, and ``python -m my_feature_runner`` is the seed
document's start command::

    from my_feature_runner.service import app
    serve(app, feature="knowledge-verification", service="ml-runner")
"""

from __future__ import annotations

import logging
from typing import Any

from mlsup import defaults
from mlsup.errors import ConfigError

__all__ = ["declared_port", "serve"]

#: uvicorn's exit status when the server could not start (port taken, lifespan failed).
STARTUP_FAILURE = 3


def serve(
    app: Any,
    *,
    feature: str | None = None,
    service: str | None = None,
    port: int | None = None,
    host: str = defaults.SERVICE_HOST,
    log_level: str = "info",
) -> None:
    """Serve ``app`` until SIGTERM/SIGINT or idle shutdown; returns when it stopped cleanly.

    ``port=None``: the port of ``service`` in ``feature``'s ``services.yaml``
    (:func:`declared_port`). Binds loopback unless ``host`` says otherwise.
    Exits non-zero (:class:`SystemExit`) when the server could not start or the service's
    startup failed, with the reason.
    """
    import uvicorn

    if port is None:
        if feature is None or service is None:
            raise ConfigError(
                "serve() needs port=..., or feature=... and service=... naming a service of a "
                "services.yaml"
            )
        port = declared_port(feature, service)
    _log_like_uvicorn(log_level)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level))
    runner = getattr(getattr(app, "state", None), "runner", None)
    if runner is not None:
        # Stop through uvicorn's own flag: its shutdown runs the lifespan's, then exits 0.
        runner.stop_server = lambda: setattr(server, "should_exit", True)
    server.run()
    error = getattr(runner, "error", None)
    if error is not None:
        raise SystemExit(f"{app.title}: startup failed: {type(error).__name__}: {error}")
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)


def declared_port(feature: str, service: str) -> int:
    """The port ``services.yaml`` declares for ``service`` of ``feature``: the file nearest the
    working directory (a runner starts in its entrypoint, as its ``startCommand`` says), else
    the registry under the services root (``$MLSUP_SERVICES_ROOT``, else ``services_root`` of
    ``mlsup.toml``)."""
    from mlsup.service.registry import Registry

    try:
        return Registry.load_nearest().port(feature, service)
    except ConfigError as nearest:
        try:
            return Registry.load_all().port(feature, service)
        except ConfigError as everywhere:
            raise everywhere from nearest


def _log_like_uvicorn(level: str) -> None:
    """Let mlsup's own messages (idle shutdown, fallbacks, failed startup) reach the runner's
    log next to uvicorn's, at the same level, unless the application configured logging."""
    logger = logging.getLogger("mlsup")
    if logger.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)-9s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level.upper())
