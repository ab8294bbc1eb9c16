"""Helpers of the queue tests: a supervisor with ``[queues.*]`` tables, a producer on the
test's Redis prefix, and reading BullMQ's own records of what happened to each job."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from mlsup.jobs import JobQueues
from mlsup.queues.config import queue_prefix
from mlsup.testing.redis import TestRedis


def queue_toml(name: str, model: str, op: str, **options: Any) -> str:
    """A ``[queues.<name>]`` table."""
    lines = [f"[queues.{name}]", f'model = "{model}"', f'op = "{op}"']
    lines += [f"{key} = {value!r}" for key, value in options.items()]
    return "\n".join(lines) + "\n\n"


def producer(redis_server: TestRedis, prefix: str) -> JobQueues:
    """A producer on the test's Redis, under the prefix the supervisor's runner uses."""
    return JobQueues(redis_server.url, redis_prefix=prefix)


def queue_events(
    redis_server: TestRedis,
    prefix: str,
    queue: str,
    kinds: tuple[str, ...] = ("completed", "failed"),
) -> Counter[tuple[str, str]]:
    """(event, job id) -> how often the queue's event stream recorded it, for the events of
    ``kinds``: a job completed twice would show here."""
    client = redis_server.client()
    try:
        entries = client.xrange(f"{queue_prefix(prefix)}:{queue}:events")
    finally:
        client.close()
    seen: Counter[tuple[str, str]] = Counter()
    for _id, fields in entries:
        event = fields.get(b"event", b"").decode()
        if event in kinds:
            seen[(event, fields[b"jobId"].decode())] += 1
    return seen


async def wait_until(
    predicate: Callable[[], Any], what: str, timeout: float = 60.0, every: float = 0.05
) -> Any:
    """Poll an async predicate until it returns something truthy; AssertionError past timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(every)


async def completed_at_least(jobs: JobQueues, queue: str, count: int) -> None:
    """Wait until ``count`` jobs of ``queue`` have completed."""

    async def enough() -> bool:
        return (await jobs.counts(queue))["completed"] >= count

    await wait_until(enough, f"{count} completed jobs of {queue!r}")
