"""``mlsup jobs``: the queues of mlsup.toml, their jobs by state and their oldest waiting job."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from mlsup.queues.config import load_queues, queue_prefix
from mlsup.queues.stats import STATES, QueueCounts, queue_counts

__all__ = ["add_parser", "render_table"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``mlsup jobs``."""
    parser = subparsers.add_parser(
        "jobs",
        help="jobs of each queue: waiting, active, completed, failed, delayed",
        description=(
            "Show the BullMQ queues of mlsup.toml ([queues.<name>]) with their jobs by state "
            "and the age of the oldest waiting job, read from the supervisor's Redis."
        ),
    )
    parser.add_argument(
        "queues", nargs="*", metavar="QUEUE", help="queues to show (default: every [queues.*])"
    )
    parser.add_argument("--config", help="mlsup.toml (default: $MLSUP_CONFIG, else ./mlsup.toml)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import redis

    from mlsup.kit.redis_url import resolve_redis_url
    from mlsup.supervisor.config import resolve_config_path

    path = resolve_config_path(args.config)
    if not path.exists():
        print(f"mlsup jobs: no {path}; pass --config PATH or set $MLSUP_CONFIG", file=sys.stderr)
        return 2
    manifest, queues = load_queues(path)
    names = list(args.queues) or list(queues)
    if not names:
        print(f"no [queues.<name>] tables in {manifest.source}", file=sys.stderr)
        return 0
    client = redis.Redis.from_url(resolve_redis_url(manifest.redis.url))
    try:
        rows = queue_counts(client, queue_prefix(manifest.redis.prefix), names)
    except redis.RedisError as exc:
        print(f"mlsup jobs: cannot read the queues from Redis: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    if args.json:
        print(json.dumps([row.to_json() for row in rows], indent=2))
    else:
        from rich.console import Console

        Console().print(render_table(rows, {name: q.model for name, q in queues.items()}))
    return 0


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def render_table(rows: Sequence[QueueCounts], models: dict[str, str]) -> object:
    """A rich Table of ``rows``; ``models`` names each queue's model."""
    from rich.table import Table

    table = Table(title="queues")
    table.add_column("queue")
    table.add_column("model")
    for state in STATES:
        table.add_column(state, justify="right")
    table.add_column("oldest waiting", justify="right")
    for row in rows:
        counts = [str(n) for n in row.by_state().values()]
        table.add_row(row.queue, models.get(row.queue, "-"), *counts, _age(row.oldest_waiting_s))
    return table
