"""``mlsup bench [SUITE...] [--json PATH] [--quick]``."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from mlsup.bench import SUITES
from mlsup.bench.rows import Row, format_table, machine_info, write_json

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure mlsup against in-process and raw baselines",
        description=(
            "Run benchmark suites. Each row compares mlsup's path with the best alternative "
            "measured in the same run, and says whether the target was met."
        ),
    )
    parser.add_argument(
        "suites",
        nargs="*",
        metavar="SUITE",
        help=f"suites to run (default: all): {', '.join(SUITES)}",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the rows as JSON here")
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and few iterations (a smoke test)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    names = args.suites or list(SUITES)
    unknown = [name for name in names if name not in SUITES]
    if unknown:
        print(
            f"mlsup bench: unknown suite {', '.join(unknown)}; choose from {', '.join(SUITES)}",
            file=sys.stderr,
        )
        return 2
    rows: list[Row] = []
    for name in names:
        print(f"running suite {name}...", file=sys.stderr, flush=True)
        suite = importlib.import_module(SUITES[name])
        suite_rows: list[Row] = suite.run(quick=args.quick)
        rows.extend(suite_rows)
    print(format_table(rows))
    if args.json is not None:
        write_json(args.json, rows, machine_info())
        print(f"wrote {args.json}", file=sys.stderr)
    return 0
