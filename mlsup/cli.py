"""The ``mlsup`` command: one entry point, one subcommand per task."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mlsup.errors import MlsupError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    from mlsup import __version__
    from mlsup.bench import cli as bench_cli
    from mlsup.ipc import demo as ipc_demo
    from mlsup.supervisor import cli as supervisor_cli

    parser = argparse.ArgumentParser(
        prog="mlsup",
        description="Share a workstation's GPUs between many programs and many models.",
    )
    parser.add_argument("--version", action="version", version=f"mlsup {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    supervisor_cli.add_parsers(subparsers)
    bench_cli.add_parser(subparsers)
    ipc_demo.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        status: int = func(args)
    except MlsupError as exc:
        print(f"mlsup: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return status
