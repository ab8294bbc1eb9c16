"""What ``GPUBoss.acquire`` returns, and the lease the current task holds in ``async with``.

A lease taken with ``async with boss.acquire(...) as lease:`` is the *scope lease* of the task
inside the block (a context variable, so it belongs to that task and to the tasks it starts):
a managed loader that loads inside the block uses it instead of taking a second lease, and
leaves releasing it to the ``async with``.
"""

from __future__ import annotations

import contextvars
from collections.abc import Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlsup.kit.leases.boss import GPUBoss
    from mlsup.kit.leases.lease import GPULease

__all__ = ["AcquireCall", "scope_lease"]

_SCOPE: contextvars.ContextVar[GPULease | None] = contextvars.ContextVar(
    "mlsup_scope_lease", default=None
)


def scope_lease(boss: GPUBoss) -> GPULease | None:
    """The lease this task holds from ``boss`` in an enclosing ``async with boss.acquire()``
    block, if it is still held; None otherwise."""
    lease = _SCOPE.get()
    if lease is None or not lease.held or lease not in boss.held:
        return None
    return lease


class AcquireCall:
    """What :meth:`GPUBoss.acquire` returns: await it for the lease, or use it as an async
    context manager that releases the lease on exit."""

    def __init__(self, boss: GPUBoss, **request: Any) -> None:
        self._boss = boss
        self._request = request
        self._lease: GPULease | None = None
        self._scope: contextvars.Token[GPULease | None] | None = None

    def __await__(self) -> Generator[Any, None, GPULease]:
        return self._boss._acquire(**self._request).__await__()

    async def __aenter__(self) -> GPULease:
        self._lease = await self._boss._acquire(**self._request)
        # __aenter__ runs in the caller's task, so the variable is set for the block's body.
        self._scope = _SCOPE.set(self._lease)
        return self._lease

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._scope is not None:
            _SCOPE.reset(self._scope)
            self._scope = None
        if self._lease is not None:
            await self._boss.release(self._lease)
