"""The supervisor's commands: ``mlsup start|status|load|unload|stop|leases|logs``.

Each command is a thin shell: it asks the supervisor (through the proxy) and hands the rows to
the pure renderers of :mod:`mlsup.supervisor.render`. ``--json`` prints the rows as they came,
for scripts; everything else is for people, and plain when the output is not a terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console, RenderableType
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

from mlsup import defaults
from mlsup.errors import ModelNotFound, NoWorkerLog, SupervisorUnavailable
from mlsup.kit.leases import Priority
from mlsup.process_identity import process_alive
from mlsup.proxy import SupervisorProxy
from mlsup.supervisor.config import RuntimePaths, SupervisorConfig
from mlsup.supervisor.render import (
    LoadOutcome,
    LoadView,
    leases_table,
    load_line,
    load_view,
    plain_rows,
    status_table,
)

__all__ = ["add_parsers", "show"]

#: Line width of tables written to a pipe or a file: wide enough that no row wraps.
_PIPE_WIDTH = 1000

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def _command(subparsers: Subparsers, name: str, summary: str, details: str, examples: str) -> Any:
    """A subcommand whose --help says what it does and shows examples."""
    return subparsers.add_parser(
        name,
        help=summary,
        description=textwrap.fill(f"{summary[0].upper()}{summary[1:]}. {details}", width=80),
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_parsers(subparsers: Subparsers) -> None:
    """Register the supervisor's subcommands."""
    start = _command(
        subparsers,
        "start",
        "run the supervisor (in the foreground; --detach to run it in the background)",
        "It serves the models of the configuration file: --config, else $MLSUP_CONFIG, else "
        "./mlsup.toml (a missing default file means no models). Without a Redis URL ([redis] "
        "url or $MLSUP_REDIS_URL) it starts an embedded one. Its runtime directory (sockets, "
        "logs) is $MLSUP_RUNTIME_DIR, else $XDG_RUNTIME_DIR/mlsup.",
        "  mlsup start                       # foreground; Ctrl-C stops it and every worker\n"
        "  mlsup start --detach --config ~/mlsup.toml",
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

    status = _command(
        subparsers,
        "status",
        "show every model: state, pid, GPU, memory, restarts, idle time, requests served",
        "NOTE says what a starting model is doing, why a model stopped, or why it failed.",
        "  mlsup status\n  mlsup status --json | jq '.[] | select(.state == \"ready\") | .model'",
    )
    status.add_argument("--json", action="store_true", help="the rows as JSON, for scripts")
    status.set_defaults(func=_status)

    load = _command(
        subparsers,
        "load",
        "load a model and wait until it serves, showing its progress",
        "Models also load on first use; this loads one ahead of time, or resets a FAILED one. "
        "The progress shows the stage (waiting for VRAM, loading) and the bytes of the "
        "model's files read so far. Exits 1 if the model fails to load or --timeout passes.",
        "  mlsup load smollm2\n  mlsup load minilm --priority high --timeout 120",
    )
    load.add_argument("model", help="a model id of the manifest")
    load.add_argument(
        "--priority",
        choices=Priority.names(),
        help="the lease's priority (default: the manifest's)",
    )
    load.add_argument(
        "--timeout",
        type=float,
        default=defaults.ENSURE_TIMEOUT_S,
        metavar="S",
        help="give up after S seconds (default: %(default)g)",
    )
    load.set_defaults(func=_load)

    unload = _command(
        subparsers,
        "unload",
        "stop a model's worker and release its VRAM",
        "The worker finishes the request in hand first. The model loads again on next use.",
        "  mlsup unload smollm2",
    )
    unload.add_argument("model", help="a model id of the manifest")
    unload.set_defaults(func=_unload)

    stop = _command(
        subparsers,
        "stop",
        "stop the supervisor and every worker",
        "Waits until the supervisor has exited (its workers drain first).",
        "  mlsup stop",
    )
    stop.set_defaults(func=_stop)

    leases = _command(
        subparsers,
        "leases",
        "show every VRAM lease in Redis, from every process sharing the GPUs",
        "Supervised workers, and any program using mlsup.GPUBoss on the same Redis.",
        "  mlsup leases\n  mlsup leases --json",
    )
    leases.add_argument("--json", action="store_true", help="the rows as JSON, for scripts")
    leases.set_defaults(func=_leases)

    logs = _command(
        subparsers,
        "logs",
        "print a model worker's output",
        "Every generation of the model's worker appends to the same log.",
        "  mlsup logs smollm2\n  mlsup logs smollm2 -f          # keep printing; Ctrl-C stops",
    )
    logs.add_argument("model", help="a model id of the manifest")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
    logs.set_defaults(func=_logs)


def _console() -> Console:
    """Where people read: colour only on a terminal, never with NO_COLOR (rich decides)."""
    return Console(highlight=False)


def show(renderable: RenderableType) -> None:
    """Print for people. Piped into grep or a file, a row stays on one line however long it
    is, without the padding that aligns a terminal's columns at its end."""
    console = _console()
    if console.is_terminal:
        console.print(renderable)
        return
    console.width = _PIPE_WIDTH
    with console.capture() as captured:
        console.print(renderable)
    print("\n".join(line.rstrip() for line in captured.get().splitlines()))


def _start(args: argparse.Namespace) -> int:
    from mlsup.supervisor.sidecars import sidecar_specs

    config = SupervisorConfig.load(args.config)
    sidecars = sidecar_specs(config, http=args.http)  # a bad --http fails here
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
    deadline = time.monotonic() + defaults.START_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = paths.log.read_text(errors="replace").splitlines()[-5:]
            print("mlsup: the supervisor failed to start:", *tail, sep="\n  ", file=sys.stderr)
            return 1
        try:
            with SupervisorProxy(paths.root, timeout=defaults.CONTROL_TIMEOUT_S) as client:
                pid = client.ping()["pid"]
            print(f"mlsup supervisor running in the background (pid {pid}); log: {paths.log}")
            return 0
        except SupervisorUnavailable:
            time.sleep(defaults.CLI_POLL_INTERVAL_S)
    process.terminate()
    print(
        f"mlsup: the supervisor did not become ready within {defaults.START_READY_TIMEOUT_S:g} s"
        f"; see {paths.log}",
        file=sys.stderr,
    )
    return 1


def _listing(
    args: argparse.Namespace,
    fetch: Callable[[SupervisorProxy], Iterable[Any]],
    render: Callable[[list[dict[str, Any]]], RenderableType],
) -> int:
    """Rows from the supervisor: as JSON for scripts (``--json``), or rendered for people."""
    with SupervisorProxy() as client:
        rows = plain_rows(fetch(client))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        show(render(rows))
    return 0


def _status(args: argparse.Namespace) -> int:
    return _listing(args, SupervisorProxy.status, status_table)


def _leases(args: argparse.Namespace) -> int:
    return _listing(args, SupervisorProxy.leases, leases_table)


def _model_row(client: SupervisorProxy, model: str) -> dict[str, Any]:
    for row in plain_rows(client.status()):
        if row.get("model") == model:
            return row
    raise ModelNotFound(f"the supervisor no longer lists model {model!r}", model=model)


def _load(args: argparse.Namespace) -> int:
    console = _console()
    with SupervisorProxy() as client:
        client.load(args.model, priority=args.priority, wait=False)
        started = time.monotonic()
        deadline = started + args.timeout
        if console.is_terminal:
            view = _load_live(client, args.model, deadline, console)
        else:
            view = _load_lines(client, args.model, deadline, started)
    if view.outcome is LoadOutcome.READY:
        console.print(view.description)
        return 0
    if view.outcome is LoadOutcome.FAILED:
        print(f"mlsup: {view.description}", file=sys.stderr)
    else:
        print(
            f"mlsup: {args.model} is not ready after {args.timeout:g} s ({view.description}); "
            "it keeps loading: see `mlsup status`",
            file=sys.stderr,
        )
    return 1


def _load_live(client: SupervisorProxy, model: str, deadline: float, console: Console) -> LoadView:
    """Poll the model's row under a live progress bar until it is ready, failed or late."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(model, total=None)
        while True:
            view = load_view(_model_row(client, model))
            if view.outcome is not LoadOutcome.WAITING or time.monotonic() >= deadline:
                return view  # the display goes (transient); the caller says how it ended
            progress.update(
                task, description=view.description, completed=view.completed or 0, total=view.total
            )
            time.sleep(defaults.CLI_POLL_INTERVAL_S)


def _load_lines(client: SupervisorProxy, model: str, deadline: float, started: float) -> LoadView:
    """The same, as one line per new stage: for logs and pipes."""
    shown = ""
    while True:
        view = load_view(_model_row(client, model))
        if view.outcome is LoadOutcome.WAITING and view.description != shown:
            print(load_line(view, time.monotonic() - started), flush=True)
            shown = view.description
        if view.outcome is not LoadOutcome.WAITING or time.monotonic() >= deadline:
            return view
        time.sleep(defaults.CLI_POLL_INTERVAL_S)


def _unload(args: argparse.Namespace) -> int:
    with SupervisorProxy() as client:
        (row,) = plain_rows([client.unload(args.model)])
    print(f"{args.model}: {row['state']}")
    return 0


def _stop(args: argparse.Namespace) -> int:
    with SupervisorProxy() as client:
        pid = client.ping()["pid"]
        client.stop()
    deadline = time.monotonic() + defaults.STOP_WAIT_TIMEOUT_S
    while time.monotonic() < deadline:
        if not process_alive(pid):
            print(f"stopped the supervisor (pid {pid})")
            return 0
        time.sleep(defaults.CLI_POLL_INTERVAL_S)
    print(
        f"mlsup: the supervisor (pid {pid}) is still running after "
        f"{defaults.STOP_WAIT_TIMEOUT_S:g} s",
        file=sys.stderr,
    )
    return 1


def _logs(args: argparse.Namespace) -> int:
    path = RuntimePaths.current().worker_log(args.model)
    if not path.exists():
        raise NoWorkerLog(
            f"no log for {args.model!r} at {path}: it has not run here; load it first "
            "(`mlsup load MODEL`), or check $MLSUP_RUNTIME_DIR",
            model=args.model,
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
                time.sleep(defaults.CLI_POLL_INTERVAL_S)
    return 0
