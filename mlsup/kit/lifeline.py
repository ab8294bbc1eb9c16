"""A worker's lifeline: it ends the moment its supervisor does, so that no worker serves on
VRAM whose lease nobody renews any more.

Two mechanisms, because either alone has a gap: a thread blocked on a pidfd of the supervisor
(``pidfd_open``, Linux 5.3+: readable the instant that process ends, whoever its parent is),
and the kernel's parent-death signal (``PR_SET_PDEATHSIG``) towards the worker's parent, the
template process (a fork server the supervisor started, which itself exits on its supervisor's
end). A worker's lease may still expire while its supervisor lives (Redis unreachable, a
stalled event loop): :class:`LeaseDeadline` covers that (see :mod:`mlsup.kit.worker`).
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import threading
import time
from collections.abc import Callable

from mlsup.contracts import HeartbeatReply
from mlsup.process_identity import process_alive

__all__ = ["LeaseDeadline", "die_with_parent", "watch_deadline", "watch_exit"]

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent ends; False where it
    cannot (not Linux). Cleared by fork: every process sets its own."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def watch_exit(pid: int, on_exit: Callable[[], None]) -> threading.Thread:
    """Call ``on_exit()`` (from a daemon thread) as soon as process ``pid`` ends; at once if it
    has ended already. Without pidfds (old kernels), it polls the pid every 50 ms."""

    def watch() -> None:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            on_exit()
            return
        except (OSError, AttributeError):
            while process_alive(pid):
                time.sleep(0.05)
            on_exit()
            return
        try:
            if process_alive(pid):  # it may have ended before the pidfd was open
                select.select([fd], [], [])
        finally:
            os.close(fd)
        on_exit()

    thread = threading.Thread(target=watch, name=f"lifeline-{pid}", daemon=True)
    thread.start()
    return thread


class LeaseDeadline:
    """Until when this worker's lease is known to be held, on the system-wide monotonic clock.

    The supervisor says, in its reply to each heartbeat, until when the lease is renewed; a
    worker serves a call only before that (less a margin for clocks and the call's start).
    ``None`` until the first reply: the lease was just granted when the worker was spawned.
    """

    def __init__(self, initial: float | None = None) -> None:
        self._until = initial
        self._lock = threading.Lock()

    def extend(self, reply: HeartbeatReply) -> None:
        """The supervisor's latest word: renewed up to ``reply.lease_until``, or none held (then
        the lease is over now)."""
        with self._lock:
            self._until = reply.lease_until if reply.lease_until is not None else 0.0

    def expired(self, now: float | None = None) -> bool:
        """Whether the lease may have expired by ``now`` (default: the clock's now)."""
        with self._lock:
            until = self._until
        return until is not None and (time.monotonic() if now is None else now) >= until

    @property
    def until(self) -> float | None:
        with self._lock:
            return self._until


def watch_deadline(
    deadline: LeaseDeadline, on_expiry: Callable[[], None], poll_s: float = 0.05
) -> threading.Thread:
    """Call ``on_expiry()`` (from a daemon thread) once ``deadline`` has passed."""

    def watch() -> None:
        while not deadline.expired():
            until = deadline.until
            wait = poll_s if until is None else min(poll_s, max(0.0, until - time.monotonic()))
            time.sleep(wait)
        on_expiry()

    thread = threading.Thread(target=watch, name="lease-deadline", daemon=True)
    thread.start()
    return thread
