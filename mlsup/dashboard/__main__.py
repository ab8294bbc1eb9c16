"""``python -m mlsup.dashboard``: serve the dashboard of a running supervisor on its own."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mlsup import defaults
from mlsup.errors import ConfigError

__all__ = ["main", "parse_listen"]


def parse_listen(address: str) -> tuple[str, int]:
    """``HOST:PORT`` as (host, port); ConfigError saying what is wrong otherwise."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--listen wants HOST:PORT (e.g. 127.0.0.1:8011), not {address!r}")
    return host, int(port)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mlsup.dashboard",
        description=(
            "Serve the live dashboard of a running supervisor (GPU leases of every process, "
            "models, activity, logs) at http://HOST:PORT/ui. Under `mlsup start --http` the "
            "gateway serves the same page at /ui; this runs it without a gateway."
        ),
    )
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run until interrupted; the exit status."""
    args = _parser().parse_args(argv)
    from mlsup.dashboard.app import create_dashboard_app, serve

    try:
        host, port = parse_listen(args.listen)
    except ConfigError as exc:
        print(f"mlsup dashboard: {exc}", file=sys.stderr)
        return 2
    print(f"mlsup dashboard: http://{host}:{port}/ui", flush=True)
    serve(create_dashboard_app(args.runtime), host, port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
