"""A real supervisor for benchmark suites: on its own runtime directory and Redis key prefix,
and leaving nothing behind (processes, sockets, shared memory, Redis keys)."""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlsup.ipc.shm import sweep_orphans
from mlsup.testing.redis import test_redis
from mlsup.testing.supervisor import RunningSupervisor, manifest

__all__ = ["Usage", "median_usage", "phases", "probe_model", "supervisor", "timed", "usage_note"]


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


@dataclass(frozen=True)
class Usage:
    """CPU seconds (all threads, user + system) and minor page faults of a process."""

    cpu_s: float
    faults: int

    @classmethod
    def of(cls, pid: int) -> Usage:
        """Usage of process ``pid`` so far, from ``/proc/<pid>/stat``."""
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()  # after "pid (comm)": field 3 on
        ticks = os.sysconf("SC_CLK_TCK")
        return cls((int(fields[11]) + int(fields[12])) / ticks, int(fields[7]))

    @classmethod
    def here(cls) -> Usage:
        """Usage of this process so far."""
        own = resource.getrusage(resource.RUSAGE_SELF)
        return cls(own.ru_utime + own.ru_stime, own.ru_minflt)

    def __sub__(self, earlier: Usage) -> Usage:
        return Usage(self.cpu_s - earlier.cpu_s, self.faults - earlier.faults)


def median_usage(samples: list[Usage]) -> Usage:
    """The median CPU time and the median page faults of samples (each on its own)."""
    return Usage(
        statistics.median(u.cpu_s for u in samples),
        int(statistics.median(u.faults for u in samples)),
    )


def usage_note(worker: Usage, warm: Usage) -> str:
    """Why a fresh worker's first result costs more than a warm process's, in measured terms:
    ``worker`` is its usage from its fork to the first result, ``warm`` a load + first call in
    a process that has loaded the model before."""
    return (
        f"CPU to the first result: the fresh worker {worker.cpu_s * 1e3:.0f} ms with "
        f"{worker.faults} page faults (from its fork on), the warm process "
        f"{warm.cpu_s * 1e3:.0f} ms with {warm.faults} (CPU of all threads, spinning ones "
        "included): a fresh process faults in every page of memory it touches, where a warm "
        "one reuses its own; wall time above CPU time is time spent waiting (for a core on "
        "this shared machine, for the supervisor)"
    )
