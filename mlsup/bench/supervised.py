"""A real supervisor for benchmark suites: on its own runtime directory and Redis key prefix,
and leaving nothing behind (processes, sockets, shared memory, Redis keys)."""

from __future__ import annotations

import json
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlsup.ipc.shm import sweep_orphans
from mlsup.testing.redis import test_redis
from mlsup.testing.supervisor import RunningSupervisor, manifest

__all__ = ["phases", "probe_model", "supervisor", "timed"]


def probe_model(model_id: str = "probe", **extra: Any) -> str:
    """The TOML of a :class:`~mlsup.testing.loaders.ProbeLoader` model (``extra``: more keys,
    e.g. ``priority``, ``vram_mb``, ``idle_timeout_s``)."""
    lines = [f"[models.{model_id}]", 'loader = "probe"', 'path = "probe.txt"']
    lines += [f"{key} = {json.dumps(value)}" for key, value in extra.items()]
    return "\n".join(lines) + "\n\n"


@contextmanager
def supervisor(
    models: str, *, memory_mb: int = 16000, **settings: float
) -> Iterator[RunningSupervisor]:
    """``mlsup start`` with the ``models`` TOML on one simulated GPU of ``memory_mb``.

    Redis: ``$MLSUP_TEST_REDIS_URL``, else the local one, else embedded; keys go under a fresh
    ``mlsup-bench:<random>:`` prefix that is deleted afterwards. ``settings`` override the
    ``[supervisor]`` table of :data:`mlsup.testing.supervisor.TEST_SETTINGS`.
    """
    prefix = f"mlsup-bench:{uuid.uuid4().hex[:12]}:"
    with test_redis() as redis, tempfile.TemporaryDirectory(prefix="mlsup-bench-") as tmp:
        config = manifest(redis.url, prefix, models, memory_mb=memory_mb, **settings)
        running = RunningSupervisor(Path(tmp), config, name="bench")
        try:
            running.start()
            yield running
        except BaseException:
            # The supervisor's side of a failure lives in its log, which goes with tmp.
            print(running.output()[-6000:], file=sys.stderr)
            raise
        finally:
            if running.process is not None:
                running.stop()
            redis.cleanup(prefix)
            sweep_orphans()


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def phases(started: float, row: dict[str, Any], done: float) -> dict[str, float]:
    """Split a cold start into lease, spawn, load and first call (seconds).

    ``started`` and ``done`` are this process's ``time.monotonic()`` around the first call;
    ``row`` is the model's status row afterwards, whose ``timeline`` is on the same clock.
    """
    t = row["timeline"]
    return {
        "lease": t["lease_granted"] - started,
        "spawn": t["worker_started"] - t["lease_granted"],
        "load": t["ready"] - t["worker_started"],
        "first call": done - t["ready"],
    }
