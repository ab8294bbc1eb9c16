"""Who owns a lease and who uses its VRAM: pid, process start time and host, and whether
they still live.

A pid alone is not an identity (pids are reused); pid + start time is
(:mod:`mlsup.process_identity`, whose ``same_process`` tells whether an owner still runs).
Redis cannot see processes, so that check runs in Python, on the host that recorded the lease.

The owner (the process whose boss renews the lease) is often not the process that uses the
VRAM: a supervisor owns the lease of each of its workers. The lease's ``users`` field names
those processes (``pid:start`` pairs, comma-separated), so that a lease whose owner died is
reaped only once its users are gone too (a worker outlives its supervisor by up to its
lifeline's reaction time, and its VRAM is in use until it ends).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from mlsup.process_identity import ProcessIdentity

__all__ = ["HolderIdentity", "OwnerIdentity", "encode_users", "parse_users"]


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


def encode_users(users: Iterable[ProcessIdentity]) -> str:
    """The ``users`` field of a lease: ``pid:start`` pairs, comma-separated ('' for none)."""
    return ",".join(f"{user.pid}:{user.token}" for user in users)


def parse_users(field: str) -> tuple[ProcessIdentity, ...]:
    """The processes a ``users`` field names; a malformed pair names none (no process that
    could still run has it), as a malformed start token does in ``same_process``."""
    users = []
    for pair in field.split(","):
        pid, sep, token = pair.partition(":")
        if sep and pid.isdigit() and token:
            users.append(ProcessIdentity(int(pid), token))
    return tuple(users)


@dataclass(frozen=True)
class HolderIdentity:
    """A lease held on this host: its owner's pid and start time and its ``users`` field, as
    recorded (a compare-and-delete reap compares all three)."""

    lease_id: str
    pid: int
    start: str
    users: str = ""

    def dead(self, alive: Callable[[int, str], bool]) -> bool:
        """Whether nobody runs on this lease any more: neither its owner nor any of its users
        is ``alive(pid, start)`` (``same_process`` in production). Pure."""
        if alive(self.pid, self.start):
            return False
        return not any(alive(user.pid, user.token) for user in parse_users(self.users))
