"""``mlsup bench [SUITE...] [--json PATH] [--report DIR] [--quick]``."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from mlsup.bench import SUITES
from mlsup.bench.rows import Row, format_table, machine_info, write_json
from mlsup.testing.loaders import register_probe

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure mlsup against in-process and raw baselines",
        description=(
            "Run benchmark suites. Each row compares mlsup's path with the best alternative\n"
            "measured in the same run, and says whether the target was met."
        ),
        epilog=(
            "examples:\n"
            "  mlsup bench --report benchmarks/report       # every suite, with charts\n"
            "  mlsup bench proxy load --quick --json out.json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "suites",
        nargs="*",
        metavar="SUITE",
        help=f"suites to run (default: all): {', '.join(SUITES)}",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the rows as JSON here")
    parser.add_argument(
        "--report", type=Path, metavar="DIR", help="write DIR/REPORT.md with PNG charts"
    )
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
    # The suites' manifests use the probe loader, in this process and in what it starts.
    register_probe()
    rows: list[Row] = []
    failed: list[str] = []
    started = time.monotonic()
    for name in names:
        print(f"running suite {name}...", file=sys.stderr, flush=True)
        suite_started = time.monotonic()
        try:
            suite = importlib.import_module(SUITES[name])
            suite_rows: list[Row] = suite.run(quick=args.quick)
        except Exception as error:  # noqa: BLE001 - one suite's failure keeps the others' rows
            failed.append(name)
            print(f"mlsup bench: suite {name} failed: {error!r}", file=sys.stderr, flush=True)
            continue
        rows.extend(suite_rows)
        print(format_table(suite_rows), flush=True)
        print(f"suite {name}: {time.monotonic() - suite_started:.1f} s", file=sys.stderr)
    print(f"all suites: {time.monotonic() - started:.1f} s", file=sys.stderr)
    machine = machine_info()
    if args.json is not None:
        write_json(args.json, rows, machine)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.report is not None:
        from mlsup.bench.report import write_report

        print(f"wrote {write_report(args.report, rows, machine)}", file=sys.stderr)
    if failed:
        print(
            f"mlsup bench: {len(failed)} suite(s) failed: {', '.join(failed)} (their errors are "
            "above; the rows of the others were kept)",
            file=sys.stderr,
        )
        return 1
    return 0
