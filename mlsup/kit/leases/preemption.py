"""``PreemptionManager``: turns preemption requests seen at renewal into lease callbacks.

The renewal script returns a lease's pending ``boss:preempt:{id}`` request, so a holder learns
of it within one renew interval (well inside the grace period) without any extra polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable
from typing import Any

from mlsup.kit.leases.lease import GPULease, PreemptCallback, PreemptionRequest
from mlsup.kit.leases.results import PreemptNotice

__all__ = ["PreemptionManager"]

_log = logging.getLogger(__name__)


class PreemptionManager:
    """Keeps the preemption callbacks of one boss's leases and dispatches requests to them.

    Each request (identified by its deadline) reaches each callback once. A callback error is
    logged, never raised into the renewal task. Awaitable callbacks run in one task group,
    cancelled together by :meth:`aclose`.
    """

    def __init__(self) -> None:
        self._callbacks: dict[str, list[PreemptCallback]] = {}
        self._queue: asyncio.Queue[tuple[Awaitable[Any], PreemptionRequest]] = asyncio.Queue()
        self._host: asyncio.Task[None] | None = None

    def register(self, lease: GPULease, callback: PreemptCallback) -> None:
        """Add a callback for ``lease``; delivers a request already pending."""
        self._callbacks.setdefault(lease.id, []).append(callback)
        if lease.preemption is not None:
            self._call(callback, lease.preemption)

    def forget(self, lease: GPULease) -> None:
        """Drop a released or lost lease's callbacks."""
        self._callbacks.pop(lease.id, None)

    def notice(self, lease: GPULease, notice: PreemptNotice) -> None:
        """A renewal saw a preemption request for ``lease``: record it and call back once."""
        if lease.preemption is not None and lease.preemption.deadline_ms == notice.deadline_ms:
            return
        remaining_s = (notice.deadline_ms - notice.now_ms) / 1000
        request = PreemptionRequest(
            lease_id=lease.id,
            gpu=lease.gpu,
            deadline=time.monotonic() + remaining_s,
            deadline_ms=notice.deadline_ms,
            priority=notice.priority,
            requester=notice.requester,
        )
        lease.preemption = request
        for callback in self._callbacks.get(lease.id, []):
            self._call(callback, request)

    def _call(self, callback: PreemptCallback, request: PreemptionRequest) -> None:
        try:
            result = callback(request)
        except Exception:  # noqa: BLE001 - a user callback must not break renewal
            _log.exception("preemption callback of lease %s failed", request.lease_id)
            return
        if inspect.isawaitable(result):
            if self._host is None:
                self._host = asyncio.ensure_future(self._hold())
            self._queue.put_nowait((result, request))

    async def _hold(self) -> None:
        # The callbacks' task group lives in this host task, from the first awaitable callback
        # until aclose(): an object cannot hold an `async with` open across its methods.
        async with asyncio.TaskGroup() as group:
            while True:
                awaitable, request = await self._queue.get()
                group.create_task(_guarded(awaitable, request))

    async def aclose(self) -> None:
        """Cancel callbacks still running, and wait until they have."""
        host, self._host = self._host, None
        if host is not None:
            host.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await host
        while not self._queue.empty():  # delivered after the host stopped: never started
            awaitable, _ = self._queue.get_nowait()
            if inspect.iscoroutine(awaitable):
                awaitable.close()
        self._callbacks.clear()


async def _guarded(awaitable: Awaitable[Any], request: PreemptionRequest) -> None:
    """Run a callback. Its failure is its holder's (the lease is revoked at the deadline
    anyway): logged with the lease, never allowed to cancel other holders' callbacks."""
    try:
        await awaitable
    except Exception:  # noqa: BLE001 - see the docstring
        _log.exception("preemption callback of lease %s failed", request.lease_id)
