"""``GPULease`` (a granted VRAM lease) and ``PreemptionRequest`` (a request to yield it)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlsup.errors import LeaseLost, UsageError
from mlsup.kit.leases.priority import Priority
from mlsup.process_identity import ProcessIdentity

if TYPE_CHECKING:
    from mlsup.kit.leases.preemption import PreemptionManager

__all__ = ["GPULease", "LostCallback", "PreemptCallback", "PreemptionRequest"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreemptionRequest:
    """A higher-priority request asks this lease to yield before ``deadline``.

    ``deadline`` is on this process's ``time.monotonic()`` clock; the lease is revoked in Redis
    at ``deadline_ms`` (Redis time), after which renewals fail with :class:`LeaseLost`.
    """

    lease_id: str
    gpu: int
    deadline: float
    deadline_ms: int
    priority: Priority | None
    requester: str

    @property
    def remaining_s(self) -> float:
        """Seconds left to yield (negative once past the deadline)."""
        return self.deadline - time.monotonic()


#: A preemption callback: plain or async, called once per request on the boss's event loop.
PreemptCallback = Callable[[PreemptionRequest], Awaitable[None] | None]
#: A loss callback: called once, synchronously, when the lease is found lost.
LostCallback = Callable[[LeaseLost], None]


class GPULease:
    """A VRAM lease granted by :class:`~mlsup.kit.leases.boss.GPUBoss`; renewed in the
    background while held.

    ``lost`` is None while the lease is good and the :class:`LeaseLost` error once it is gone
    (expired, revoked after preemption, reaped, or lost by Redis); :meth:`check` raises it.
    ``epoch`` is the GPU's fencing counter at grant (re-registration gives a new one).
    ``users`` are the processes that use its VRAM, as recorded by :meth:`GPUBoss.set_users`.
    """

    def __init__(
        self,
        *,
        id: str,
        token: str,
        gpu: int,
        vram_mb: int,
        priority: Priority,
        model_id: str,
        epoch: int,
        manager: PreemptionManager | None = None,
    ) -> None:
        self.id = id
        self.gpu = gpu
        self.vram_mb = vram_mb
        self.priority = priority
        self.model_id = model_id
        self.epoch = epoch
        self.lost: LeaseLost | None = None
        self.users: tuple[ProcessIdentity, ...] = ()
        self.released = False
        self.preemption: PreemptionRequest | None = None
        self.renewed_at = time.monotonic()
        self._token = token
        self._manager = manager
        self._lost_callbacks: list[LostCallback] = []

    @property
    def token(self) -> str:
        """The secret that proves ownership; only the holder's boss needs it."""
        return self._token

    @property
    def held(self) -> bool:
        """True while neither released nor lost."""
        return not self.released and self.lost is None

    def on_preempt(self, callback: PreemptCallback) -> None:
        """Call ``callback(PreemptionRequest)`` when this lease is asked to yield.

        A request already pending is delivered at once. The callback should release the lease
        (or unload and release) before ``request.deadline``.
        """
        if self._manager is None:
            raise UsageError(
                "this lease was not granted by a GPUBoss; it cannot be preempted",
                lease_id=self.id,
            )
        self._manager.register(self, callback)

    def on_lost(self, callback: LostCallback) -> None:
        """Call ``callback(LeaseLost)`` once when the lease is found lost (at once if it is).

        Renewal finds it (expired, revoked, vanished, Redis unreachable for a TTL); the holder
        must stop using the VRAM. The callback runs synchronously, on the boss's event loop;
        schedule slow work (unloading) as a task.
        """
        if self.lost is not None:
            self._call_lost(callback, self.lost)
        else:
            self._lost_callbacks.append(callback)

    def _call_lost(self, callback: LostCallback, error: LeaseLost) -> None:
        try:
            callback(error)
        except Exception:  # noqa: BLE001 - a user callback must not break renewal
            _log.exception("loss callback of lease %s failed", self.id)

    def mark_lost(self, reason: str) -> LeaseLost:
        """Record that the lease is gone and call the loss callbacks; returns the error (kept
        in ``lost``)."""
        if self.lost is None:
            self.lost = LeaseLost(
                f"lease {self.id} of model {self.model_id!r} on GPU {self.gpu} was lost "
                f"({reason}); its VRAM may be in use by someone else: stop using the GPU and "
                "acquire a new lease",
                lease_id=self.id,
                gpu=self.gpu,
                model=self.model_id,
                reason=reason,
            )
            callbacks, self._lost_callbacks = self._lost_callbacks, []
            for callback in callbacks:
                self._call_lost(callback, self.lost)
        return self.lost

    def check(self) -> None:
        """Raise :class:`LeaseLost` if the lease is gone."""
        if self.lost is not None:
            raise self.lost

    def __repr__(self) -> str:
        state = "released" if self.released else "lost" if self.lost else "held"
        return (
            f"<GPULease {self.id} gpu={self.gpu} {self.vram_mb}MB {self.priority.name} "
            f"model={self.model_id!r} epoch={self.epoch} {state}>"
        )
