"""``SyncGPUBoss``: the lease API for code without an event loop.

It runs a :class:`GPUBoss` on a private event loop in a daemon thread; each method submits
the coroutine there and waits. Preemption callbacks run on that thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from mlsup import defaults
from mlsup.errors import UsageError
from mlsup.kit.leases.boss import GPUBoss
from mlsup.kit.leases.lease import GPULease
from mlsup.kit.leases.priority import Priority
from mlsup.kit.leases.snapshot import GpuSnapshot

__all__ = ["SyncGPUBoss"]

T = TypeVar("T")


class SyncGPUBoss:
    """Blocking twin of :class:`GPUBoss` (same constructor arguments).

    ``lease = boss.acquire(...)`` returns a held lease; ``with boss.leased(...) as lease:``
    releases it on exit. :meth:`close` (or leaving ``with SyncGPUBoss(...) as boss:``) releases
    what is held and stops the thread.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="mlsup-gpuboss", daemon=True
        )
        self._thread.start()
        self.boss = GPUBoss(*args, **kwargs)
        self._closed = False

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise UsageError("this SyncGPUBoss is closed; create a new one")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def connect(self) -> None:
        """Connect (acquire does it on first use)."""
        self._call(self.boss.connect())

    def acquire(
        self,
        vram_mb: int,
        model_id: str,
        priority: Priority | str = Priority.NORMAL,
        gpu: int | None = None,
        timeout: float = defaults.LEASE_ACQUIRE_TIMEOUT_S,
    ) -> GPULease:
        """Like :meth:`GPUBoss.acquire`, blocking until granted."""

        async def acquire() -> GPULease:
            return await self.boss.acquire(vram_mb, model_id, priority, gpu, timeout)

        return self._call(acquire())

    @contextmanager
    def leased(
        self,
        vram_mb: int,
        model_id: str,
        priority: Priority | str = Priority.NORMAL,
        gpu: int | None = None,
        timeout: float = defaults.LEASE_ACQUIRE_TIMEOUT_S,
    ) -> Iterator[GPULease]:
        """Acquire, yield the lease, release it on exit."""
        lease = self.acquire(vram_mb, model_id, priority, gpu, timeout)
        try:
            yield lease
        finally:
            self.release(lease)

    def release(self, lease: GPULease) -> None:
        """Like :meth:`GPUBoss.release`."""
        self._call(self.boss.release(lease))

    def renew(self, lease: GPULease) -> None:
        """Like :meth:`GPUBoss.renew`."""
        self._call(self.boss.renew(lease))

    def resize(self, lease: GPULease, vram_mb: int) -> None:
        """Like :meth:`GPUBoss.resize`."""
        self._call(self.boss.resize(lease, vram_mb))

    def snapshot(self) -> dict[int, GpuSnapshot]:
        """Like :meth:`GPUBoss.snapshot`."""
        return self._call(self.boss.snapshot())

    def close(self) -> None:
        """Release what is held, close the boss, stop the loop thread (idempotent)."""
        if self._closed:
            return
        self._call(self.boss.close())
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> SyncGPUBoss:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
