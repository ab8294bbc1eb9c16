"""Back-pressure: each model has a bounded queue at the gateway; past its bound, QueueFull (a
429 with ``Retry-After``) instead of an ever-growing backlog.

A worker serves one request at a time, so the gateway sends one at a time per model too: the
rest wait here, where they are counted (``mlsup_requests_waiting``) and bounded, rather than
unseen in the worker's socket.
"""

from __future__ import annotations

import asyncio

from mlsup.errors import QueueFull

__all__ = ["ModelQueue", "Ticket"]


class Ticket:
    """A place in a model's queue; :meth:`release` (idempotent) gives it up."""

    def __init__(self, queue: ModelQueue) -> None:
        self._queue = queue
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._queue._leave()


class ModelQueue:
    """At most ``limit`` requests in flight or waiting for one model; one runs at a time."""

    def __init__(self, model: str, limit: int) -> None:
        self.model = model
        self.limit = limit
        self.running = 0
        self.waiting = 0
        self._turn = asyncio.Lock()

    async def enter(self) -> Ticket:
        """Wait for this model's turn; QueueFull at once when ``limit`` are already queued.
        Release the ticket when the response is complete (a stream: when it ends)."""
        if self.running + self.waiting >= self.limit:
            raise QueueFull(
                f"model {self.model!r} already has {self.running + self.waiting} requests in "
                f"flight or waiting (max_queue = {self.limit}); retry shortly",
                model=self.model,
                limit=self.limit,
            )
        self.waiting += 1
        try:
            await self._turn.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        return Ticket(self)

    def _leave(self) -> None:
        self.running -= 1
        self._turn.release()
