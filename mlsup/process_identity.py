"""Which process is which, and whether it still runs: the one home of both questions.

A pid alone is not an identity: pids are reused. A pid together with the process's start time
is. mlsup records that pair wherever something outlives a process or is owned by one:

- shared-memory segment names (``mlsup-<pid>-<start token>-<random>``), so that the segments
  of a dead creator are swept;
- VRAM leases in Redis (``pid`` and ``start`` fields), so that the leases of a dead holder on
  this host are reaped at once;
- the supervisor's state file, so that a restarted supervisor kills the orphans of its
  predecessor and never a stranger that inherited a pid.

:func:`start_token` is that start time in one format; :func:`same_process` compares a recorded
identity with what runs now. :func:`process_alive` answers the cheaper question that callers
waiting on a worker ask every few milliseconds ("does pid still run?") with one syscall and
one small ``/proc`` read. A zombie (ended, not yet reaped by its parent) counts as dead in
every question: it holds no memory and serves nothing.

This module imports only the standard library and psutil, so every layer (ipc, kit,
supervisor, proxy) may use it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import psutil

__all__ = ["ProcessIdentity", "process_alive", "same_process", "start_token"]

# psutil derives a start time from clock ticks since boot, as a float; two readings of the same
# process may round one centisecond apart, never more.
_TOKEN_TOLERANCE = 1


def process_alive(pid: int) -> bool:
    """Whether pid runs: a zombie (ended, not yet reaped by its parent) does not count.

    Cheap (one ``kill(pid, 0)`` and one small ``/proc`` read): callers of a worker check it in
    every liveness slice while they wait.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except (OSError, IndexError):
        return True  # no /proc to ask: kill(0) said it exists


def start_token(pid: int | None = None) -> str | None:
    """When process pid (default: this one) started, in centiseconds since the epoch, as hex.

    None if it does not run (or is a zombie). Pair it with the pid to name a process.
    """
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return format(int(process.create_time() * 100), "x")
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def same_process(pid: int, token: str) -> bool:
    """Whether the process recorded as (pid, token) still runs.

    False when pid is gone, is a zombie, or is now another process that reused the pid (its
    start differs). A process we may not inspect counts as alive: it is not ours to judge.
    """
    try:
        recorded = int(token, 16)
    except ValueError:
        return False  # a malformed record names no process that could still run
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        started = int(process.create_time() * 100)
    except (psutil.NoSuchProcess, ValueError):
        return False
    except psutil.AccessDenied:
        return True
    return abs(started - recorded) <= _TOKEN_TOLERANCE


@dataclass(frozen=True)
class ProcessIdentity:
    """A process as mlsup records it: pid and :func:`start_token`."""

    pid: int
    token: str

    @classmethod
    def current(cls) -> ProcessIdentity:
        """This process."""
        pid = os.getpid()
        token = start_token(pid)
        assert token is not None, "this process runs"
        return cls(pid, token)

    @classmethod
    def of(cls, pid: int) -> ProcessIdentity | None:
        """The process that runs as pid now; None if none does."""
        token = start_token(pid)
        return None if token is None else cls(pid, token)

    def alive(self) -> bool:
        """Whether this very process still runs (see :func:`same_process`)."""
        return same_process(self.pid, self.token)
