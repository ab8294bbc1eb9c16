"""``mlsup services``: list the features' services with live health, check them, print URLs.

A thin shell: the registry (:mod:`mlsup.service.registry`) parses, the probe
(:mod:`mlsup.service.registry_probe`) observes, the checks (:mod:`mlsup.service.registry_checks`)
decide; this module only turns arguments into those calls and results into text or JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from mlsup.defaults import SERVICE_HEALTH_TIMEOUT_S
from mlsup.service.registry import SERVICES_ROOT_ENV, Registry
from mlsup.service.registry_checks import Health, Observation, Problem, check

__all__ = ["add_parser", "problem_rows", "service_rows"]

_HEALTH_STYLE = {
    Health.OK: "green",
    Health.LOADING: "yellow",
    Health.DOWN: "red",
    Health.UNEXPECTED: "magenta",
    Health.NO_PORT: "dim",
}


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``mlsup services`` and its ``check`` and ``url`` subcommands."""
    # SUPPRESS: options given before the subcommand are not overwritten by its defaults.
    root = argparse.ArgumentParser(add_help=False)
    root.add_argument(
        "--root",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help=f"directory searched for services.yaml files (default: ${SERVICES_ROOT_ENV}, "
        "else services_root in mlsup.toml)",
    )
    probe = argparse.ArgumentParser(add_help=False)
    probe.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )
    probe.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_positive_seconds,
        default=argparse.SUPPRESS,
        help=f"deadline of each GET /health (default {SERVICE_HEALTH_TIMEOUT_S:g})",
    )
    services = subparsers.add_parser(
        "services",
        parents=[root, probe],
        help="the features' services (services.yaml): ports, health, checks, URLs",
        description=(
            "List every service declared by a services.yaml under the services root, with its "
            "port, gpu flag, dependencies and live health (GET /health: ok, loading when it "
            "answers 503, down when nothing answers). Subcommands check the registry and "
            "print a service's URL for scripts."
        ),
    )
    services.set_defaults(func=_list)
    commands = services.add_subparsers(title="subcommands", metavar="SUBCOMMAND")
    listing = commands.add_parser("list", parents=[root, probe], help="the listing (default)")
    listing.set_defaults(func=_list)
    checking = commands.add_parser(
        "check",
        parents=[root, probe],
        help="exit 1 listing problems: duplicate or taken ports, missing entrypoints, ...",
        description=(
            "Report duplicate ports across features, ports that contradict feature.ports, "
            "ports held by a process that is not the service (its working directory and "
            "command line lie outside the entrypoint or, when it cannot be inspected, its "
            "/health does not answer as a service), missing entrypoints and dependencies "
            "naming no known service. Exit status 1 when there is any, else 0."
        ),
    )
    checking.set_defaults(func=_check)
    url = commands.add_parser(
        "url",
        parents=[root],
        help="print a service's URL (http://127.0.0.1:PORT)",
        description="Print http://127.0.0.1:PORT of a feature's service, for scripts: "
        'curl "$(mlsup services url my-feature ml-runner)/health"',
    )
    url.add_argument("feature", help="feature id (feature.id in its services.yaml)")
    url.add_argument("service", help="service id (services[].id)")
    url.set_defaults(func=_url)


def service_rows(registry: Registry, observation: Observation) -> list[dict[str, Any]]:
    """One plain row per service: what the listing and its ``--json`` twin show."""
    rows = []
    for feature, service in registry.services():
        report = observation.health.get(service.port) if service.port is not None else None
        health = report.health if report is not None else Health.NO_PORT
        rows.append(
            {
                "feature": feature.id,
                "feature_name": feature.name,
                "service": service.id,
                "name": service.title,
                "type": service.type or None,
                "port": service.port,
                "url": registry.url(feature.id, service.id) if service.port else None,
                "gpu": service.gpu,
                "dependencies": list(service.dependencies),
                "health": health.value,
                "health_detail": report.detail if report is not None else "",
                "entrypoint": service.entrypoint,
                "start_command": service.start_command,
                "source": feature.source,
            }
        )
    return rows


def problem_rows(problems: Sequence[Problem]) -> list[dict[str, Any]]:
    """Problems as plain rows for ``--json``."""
    return [
        {
            "kind": p.kind.value,
            "feature": p.feature,
            "service": p.service,
            "port": p.port,
            "message": p.message,
        }
        for p in problems
    ]


def _list(args: argparse.Namespace) -> int:
    from mlsup.service.registry_probe import observe

    registry = _registry(args)
    rows = service_rows(registry, observe(registry, timeout=_timeout(args), listeners=False))
    if getattr(args, "json", False):
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no services.yaml declares a service under {registry.root}", file=sys.stderr)
        return 0
    _print_table(rows)
    return 0


def _check(args: argparse.Namespace) -> int:
    from mlsup.service.registry_probe import observe

    registry = _registry(args)
    problems = check(registry, observe(registry, timeout=_timeout(args)))
    count = sum(1 for _ in registry.services())
    if getattr(args, "json", False):
        summary = {
            "ok": not problems,
            "root": registry.root,
            "features": len(registry.features),
            "services": count,
            "problems": problem_rows(problems),
        }
        print(json.dumps(summary, indent=2))
    elif problems:
        print(f"{len(problems)} problem(s) in {registry.root}:")
        for problem in problems:
            print(f"  {problem.kind.value}: {problem.message}")
    else:
        print(f"ok: {len(registry.features)} feature(s), {count} service(s) under {registry.root}")
    return 1 if problems else 0


def _url(args: argparse.Namespace) -> int:
    print(_registry(args).url(args.feature, args.service))
    return 0


def _registry(args: argparse.Namespace) -> Registry:
    return Registry.load_all(getattr(args, "root", None))


def _timeout(args: argparse.Namespace) -> float:
    value: float = getattr(args, "timeout", SERVICE_HEALTH_TIMEOUT_S)
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, not {text}")
    return value


def _print_table(rows: Sequence[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    for heading in ("FEATURE", "SERVICE"):
        table.add_column(heading, no_wrap=True)
    for heading in ("TYPE", "PORT", "GPU", "HEALTH", "DEPENDENCIES"):
        table.add_column(heading)
    for row in rows:
        health = Health(row["health"])
        # Why a service is down is in --json; here only what qualifies an answer.
        shown = health is not Health.DOWN and row["health_detail"]
        detail = f" ({row['health_detail']})" if shown else ""
        # Text, not markup: details and dependencies come from files and sockets.
        cells = [
            row["feature"],
            row["service"],
            row["type"] or "-",
            str(row["port"] or "-"),
            "yes" if row["gpu"] else "no",
        ]
        table.add_row(
            *(Text(cell) for cell in cells),
            Text.assemble((health.value, _HEALTH_STYLE[health]), detail),
            Text("\n".join(row["dependencies"]) or "-"),
        )
    Console().print(table)
