"""``Renewer``: the background task that keeps one boss's leases alive.

Every renew interval it checks Redis' run id (a change means Redis restarted), then renews
each held lease (which also refreshes its heartbeat and reports preemption requests). A lease
Redis no longer knows is re-registered if Redis restarted, and lost otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from mlsup import defaults
from mlsup.errors import LeaseLost, TransportError
from mlsup.kit.leases.lease import GPULease
from mlsup.kit.leases.owner import encode_users
from mlsup.kit.leases.results import AdmitOutcome, RenewOutcome

if TYPE_CHECKING:
    from mlsup.kit.leases.boss import GPUBoss

__all__ = ["Renewer"]

_log = logging.getLogger(__name__)


class Renewer:
    """Renews, re-registers and loses the leases of ``boss``."""

    def __init__(self, boss: GPUBoss, run_id: str) -> None:
        self.boss = boss
        self.run_id = run_id
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        """Start the background task on the running loop."""
        self._task = asyncio.create_task(self._loop(), name="mlsup-lease-renewal")

    async def stop(self) -> None:
        """Stop the background task."""
        self._stopping = True
        task, self._task = self._task, None
        # Cancel until done (see TASK_CANCEL_RETRY_S); the flag ends the loop in that case too.
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=defaults.TASK_CANCEL_RETRY_S)
        if task is not None and not task.cancelled():
            with contextlib.suppress(BaseException):
                task.result()

    async def _loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.boss.timing.renew_interval)
            try:
                await self.tick()
            except Exception:  # noqa: BLE001 - the task must outlive any one bad tick
                _log.exception("lease renewal failed")

    async def _restarted(self) -> bool:
        run_id, _ = await self.boss.store.info()
        if run_id == self.run_id:
            return False
        _log.warning(
            "Redis restarted (run id %s -> %s): re-registering leases", self.run_id, run_id
        )
        self.run_id = run_id
        return True

    async def tick(self) -> None:
        """Renew (or re-register, after a restart) every held lease once."""
        try:
            restarted = await self._restarted()
        except TransportError:
            restarted = False
        for lease in self.boss.held:
            try:
                if restarted:
                    await self.reregister(lease)
                else:
                    await self.renew(lease)
            except LeaseLost:
                pass  # recorded in lease.lost
            except TransportError:
                if time.monotonic() - lease.renewed_at >= self.boss.timing.ttl_s:
                    self._lose(lease, "Redis unreachable for longer than the lease TTL")

    def _lose(self, lease: GPULease, reason: str) -> LeaseLost:
        self.boss.untrack(lease)
        return lease.mark_lost(reason)

    async def renew(self, lease: GPULease) -> None:
        """Renew one lease; raises :class:`LeaseLost` (and marks it) if it is gone."""
        result = await self.boss.store.renew(lease.id, lease.token)
        if result.outcome is RenewOutcome.OK:
            lease.renewed_at = time.monotonic()
            if result.preempt is not None:
                self.boss.preemption.notice(lease, result.preempt)
        elif result.outcome is RenewOutcome.LOST:
            raise self._lose(lease, result.reason)
        elif await self._restarted():
            await self.reregister(lease)
        else:
            raise self._lose(lease, "it vanished from Redis")

    async def reregister(self, lease: GPULease) -> None:
        """Admit a held lease again after Redis lost it; lost if it no longer fits."""
        req = self.boss.lease_request(
            lease.id,
            lease.token,
            gpu=lease.gpu,
            vram_mb=lease.vram_mb,
            priority=lease.priority,
            model_id=lease.model_id,
            users=encode_users(lease.users),
        )
        result = await self.boss.store.admit(req, readmit=True)
        if result.outcome is AdmitOutcome.NO_GPU:
            await self.boss.republish(lease.gpu)
            result = await self.boss.store.admit(req, readmit=True)
        if result.outcome is AdmitOutcome.GRANTED:
            lease.epoch = result.epoch
            lease.renewed_at = time.monotonic()
        elif result.outcome is AdmitOutcome.NO_FIT:
            raise self._lose(lease, "it no longer fits after a Redis restart")
        else:
            raise self._lose(
                lease, f"Redis restarted and it could not re-register ({result.outcome.value})"
            )
