"""Who owns a lease: pid, process start time and host, and whether that owner still lives.

A pid alone is not an identity (pids are reused); pid + start time is. Redis cannot see
processes, so the check runs in Python, on the host that recorded the lease.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import psutil

__all__ = ["OwnerIdentity", "owner_alive", "process_start"]


def process_start(pid: int) -> str | None:
    """A process's start time as recorded in leases, or None if it is gone (or a zombie)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None  # killed, not yet waited for: it holds no GPU memory any more
        return f"{process.create_time():.2f}"
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def owner_alive(pid: int, start: str) -> bool:
    """True if the process ``pid`` started at ``start`` still runs on this host."""
    return process_start(pid) == start


@dataclass(frozen=True)
class OwnerIdentity:
    """This process as recorded in the leases it takes."""

    pid: int
    start: str
    host: str

    @classmethod
    def current(cls, host: str | None = None) -> OwnerIdentity:
        """The identity of this process; ``host`` overrides the hostname (containers that
        share one, or tests that play a remote holder)."""
        pid = os.getpid()
        return cls(pid, process_start(pid) or "0", host or socket.gethostname())

    @property
    def label(self) -> str:
        """``host:pid``, the ``owner`` field of a lease."""
        return f"{self.host}:{self.pid}"
