"""Who owns a lease: pid, process start time and host, and whether that owner still lives.

A pid alone is not an identity (pids are reused); pid + start time is
(:mod:`mlsup.process_identity`, whose ``same_process`` tells whether an owner still runs).
Redis cannot see processes, so that check runs in Python, on the host that recorded the lease.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from mlsup.process_identity import ProcessIdentity

__all__ = ["OwnerIdentity"]


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
        me = ProcessIdentity.current()
        return cls(me.pid, me.token, host or socket.gethostname())

    @property
    def label(self) -> str:
        """``host:pid``, the ``owner`` field of a lease."""
        return f"{self.host}:{self.pid}"
