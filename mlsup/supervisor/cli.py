"""The supervisor's commands: ``mlsup start|status|load|unload|stop|leases|logs``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlsup.errors import MlsupError, SupervisorUnavailable
from mlsup.proxy import SupervisorProxy
from mlsup.supervisor.config import RuntimePaths, SupervisorConfig

__all__ = ["add_parsers"]


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    start = subparsers.add_parser(
        "start",
        help="run the supervisor (foreground; --detach to run it in the background)",
        description=(
            "Run the supervisor for the models of the configuration file: --config, else "
            "$MLSUP_CONFIG, else ./mlsup.toml (a missing default file means no models). "
            "Without a Redis URL ([redis] url or $MLSUP_REDIS_URL) it starts an embedded one."
        ),
    )
    start.add_argument("--config", metavar="PATH", help="the mlsup.toml to use")
    start.add_argument("--detach", action="store_true", help="return once the supervisor is ready")
    start.add_argument(
        "--http",
        metavar="ADDR",
        help="serve the OpenAI-compatible HTTP API on ADDR (PORT for loopback, or HOST:PORT); "
        "overrides [http] listen",
    )
    start.set_defaults(func=_start)

    status = subparsers.add_parser("status", help="one row per model: state, pid, memory, ...")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=_status)

    load = subparsers.add_parser("load", help="load a model and wait until it serves")
    load.add_argument("model")
    load.add_argument("--priority", choices=["low", "normal", "high", "critical"])
    load.set_defaults(func=_load)

    unload = subparsers.add_parser("unload", help="stop a model's worker and release its VRAM")
    unload.add_argument("model")
    unload.set_defaults(func=_unload)

    stop = subparsers.add_parser("stop", help="stop the supervisor and every worker")
    stop.set_defaults(func=_stop)

    leases = subparsers.add_parser("leases", help="every VRAM lease in Redis, from every process")
    leases.add_argument("--json", action="store_true", help="machine-readable output")
    leases.set_defaults(func=_leases)

    logs = subparsers.add_parser("logs", help="a model worker's output")
    logs.add_argument("model")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
    logs.set_defaults(func=_logs)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """rows as an aligned text table with the given (key, heading) columns."""

    def cell(value: Any) -> str:
        return "-" if value is None or value == "" else str(value)

    lines = [[heading for _, heading in columns]]
    lines += [[cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def _start(args: argparse.Namespace) -> int:
    from mlsup.supervisor.sidecars import raw_tables, sidecar_specs

    config = SupervisorConfig.load(args.config)
    sidecars = sidecar_specs(config, raw_tables(config), http=args.http)  # a bad --http fails here
    if args.detach:
        return _start_detached(args, config.paths)
    from mlsup.supervisor.daemon import Supervisor

    async def main() -> None:
        supervisor = Supervisor(config, log=lambda line: print(line, flush=True), sidecars=sidecars)
        await supervisor.start()
        print(f"mlsup supervisor ready (pid {os.getpid()}) on {config.paths.root}", flush=True)
        await supervisor.serve()
        print("mlsup supervisor stopped", flush=True)

    asyncio.run(main())
    return 0


def _start_detached(args: argparse.Namespace, paths: RuntimePaths) -> int:
    command = [sys.executable, "-m", "mlsup", "start"]
    if args.config:
        command += ["--config", str(Path(args.config).resolve())]
    if args.http:
        command += ["--http", args.http]
    with open(paths.log, "ab") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = paths.log.read_text(errors="replace").splitlines()[-5:]
            print("mlsup: the supervisor failed to start:", *tail, sep="\n  ", file=sys.stderr)
            return 1
        try:
            with SupervisorProxy(paths.root, timeout=1.0) as client:
                pid = client.ping()["pid"]
            print(f"mlsup supervisor running in the background (pid {pid}); log: {paths.log}")
            return 0
        except SupervisorUnavailable:
            time.sleep(0.1)
    process.terminate()
    print("mlsup: the supervisor did not become ready within 120 s", file=sys.stderr)
    return 1


STATUS_COLUMNS = [
    ("model", "MODEL"), ("state", "STATE"), ("pid", "PID"), ("gpu", "GPU"),
    ("leased_mb", "LEASED MB"), ("measured_mb", "MEASURED MB"), ("restarts", "RESTARTS"),
    ("idle_s", "IDLE S"), ("requests", "REQUESTS"), ("reason", "NOTE"),
]  # fmt: skip


def _show(rows: list[dict[str, Any]], columns: Sequence[tuple[str, str]], as_json: bool,
          empty: str) -> int:  # fmt: skip
    """rows as JSON for scripts, or as a table (or ``empty``) for people."""
    if as_json:
        print(json.dumps(rows, indent=2))
    elif rows:
        print(table(rows, columns))
    else:
        print(empty)
    return 0


def _status(args: argparse.Namespace) -> int:
    with SupervisorProxy() as client:
        rows = client.status()
    return _show(rows, STATUS_COLUMNS, args.json, "no models in the manifest")


def _load(args: argparse.Namespace) -> int:
    with SupervisorProxy() as client:
        client.load(args.model, priority=args.priority, wait=False)
        started = time.monotonic()
        shown = ""
        while True:
            row = next(r for r in client.status() if r["model"] == args.model)
            progress = f"{row['state']} {row['stage']}".strip()
            if progress != shown:
                print(f"[{time.monotonic() - started:6.1f} s] {args.model}: {progress}", flush=True)
                shown = progress
            if row["state"] == "ready":
                where = f"{row['leased_mb']} MB on GPU {row['gpu']}"
                print(f"{args.model} is ready: pid {row['pid']}, {where}")
                return 0
            if row["state"] in ("unloaded", "failed"):
                error = row.get("error") or {}
                print(
                    f"mlsup: {args.model} did not load: {error.get('message', row['reason'])}",
                    file=sys.stderr,
                )
                return 1
            time.sleep(0.1)


def _unload(args: argparse.Namespace) -> int:
    with SupervisorProxy() as client:
        row = client.unload(args.model)
    print(f"{args.model}: {row['state']}")
    return 0


def _stop(args: argparse.Namespace) -> int:
    with SupervisorProxy() as client:
        pid = client.ping()["pid"]
        client.stop()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print(f"stopped the supervisor (pid {pid})")
            return 0
        time.sleep(0.1)
    print(f"mlsup: the supervisor (pid {pid}) is still running after 60 s", file=sys.stderr)
    return 1


LEASE_COLUMNS = [
    ("gpu", "GPU"), ("id", "LEASE"), ("model_id", "MODEL"), ("vram_mb", "MB"),
    ("priority", "PRIORITY"), ("pid", "PID"), ("host", "HOST"), ("age_s", "AGE S"),
]  # fmt: skip


def _leases(args: argparse.Namespace) -> int:
    with SupervisorProxy() as client:
        rows = client.leases()
    if not args.json:
        for row in rows:
            row["age_s"] = round(row["age_s"], 1)  # for people; scripts get the full value
    return _show(rows, LEASE_COLUMNS, args.json, "no leases")


def _logs(args: argparse.Namespace) -> int:
    path = RuntimePaths.current().worker_log(args.model)
    if not path.exists():
        raise MlsupError(
            f"no log for {args.model!r} at {path}; has it been loaded?", model=args.model
        )
    with open(path, encoding="utf-8", errors="replace") as log:
        sys.stdout.write(log.read())
        sys.stdout.flush()
        while args.follow:
            line = log.readline()
            if line:
                sys.stdout.write(line)
                sys.stdout.flush()
            else:
                time.sleep(0.2)
    return 0
