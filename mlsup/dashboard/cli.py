"""``mlsup dashboard`` and ``python -m mlsup.dashboard``: serve the dashboard of a running
supervisor on its own (the gateway serves the same page at ``/ui`` of ``mlsup start --http``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mlsup import defaults
from mlsup.errors import ConfigError

__all__ = ["add_parser", "main", "parse_listen"]

_DESCRIPTION = (
    "Serve the live dashboard of a running supervisor at http://HOST:PORT/ui: the GPU leases "
    "of every process on the machine, the models with their states and activity, load and "
    "unload buttons, worker logs. Under `mlsup start --http` the gateway serves the same page "
    "at /ui; this runs it without a gateway."
)


def parse_listen(address: str) -> tuple[str, int]:
    """``HOST:PORT`` as (host, port); ConfigError saying what is wrong otherwise."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--listen wants HOST:PORT (e.g. 127.0.0.1:8011), not {address!r}")
    return host, int(port)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runtime",
        type=Path,
        help="the supervisor's runtime directory (default: $MLSUP_RUNTIME_DIR, else this user's)",
    )
    parser.add_argument(
        "--listen",
        default=defaults.DASHBOARD_LISTEN,
        metavar="HOST:PORT",
        help=f"address to serve on (default: {defaults.DASHBOARD_LISTEN}; the page has load "
        "and unload buttons, so keep it on a local address)",
    )


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``mlsup dashboard``."""
    parser = subparsers.add_parser(
        "dashboard", help="serve the live web dashboard on its own", description=_DESCRIPTION
    )
    _arguments(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        host, port = parse_listen(args.listen)
    except ConfigError as exc:
        print(f"mlsup dashboard: {exc}", file=sys.stderr)
        return 2
    try:
        from mlsup.dashboard.app import create_dashboard_app, serve
    except ModuleNotFoundError as exc:
        print(
            f"mlsup dashboard: needs FastAPI and uvicorn ({exc.name} is missing): "
            "pip install 'mlsup[service]'",
            file=sys.stderr,
        )
        return 2
    print(f"mlsup dashboard: http://{host}:{port}/ui", flush=True)
    serve(create_dashboard_app(args.runtime), host, port)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mlsup.dashboard``: run until interrupted; the exit status."""
    parser = argparse.ArgumentParser(prog="python -m mlsup.dashboard", description=_DESCRIPTION)
    _arguments(parser)
    return _run(parser.parse_args(argv))
