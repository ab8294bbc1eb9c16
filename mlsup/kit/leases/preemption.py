"""``PreemptionManager``: turns preemption requests seen at renewal into lease callbacks.

The renewal script returns a lease's pending ``boss:preempt:{id}`` request, so a holder learns
of it within one renew interval (well inside the grace period) without any extra polling.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time

from mlsup.kit.leases.lease import GPULease, PreemptCallback, PreemptionRequest
from mlsup.kit.leases.results import PreemptNotice

__all__ = ["PreemptionManager"]

_log = logging.getLogger(__name__)


class PreemptionManager:
    """Keeps the preemption callbacks of one boss's leases and dispatches requests to them.

    Each request (identified by its deadline) reaches each callback once. A callback error is
    logged, never raised into the renewal task.
    """

    def __init__(self) -> None:
        self._callbacks: dict[str, list[PreemptCallback]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

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
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.error("preemption callback failed", exc_info=task.exception())

    async def aclose(self) -> None:
        """Cancel callbacks still running."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._callbacks.clear()
