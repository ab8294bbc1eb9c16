"""QueueWorkers.close: an idle wait for jobs that began after the close is cancelled, so it
cannot hold the close (a bullmq race); a wait that is done is left alone."""

from __future__ import annotations

import asyncio
from typing import Any

from mlsup.queues.workers import _cancel_late_waits


class LateWaiter:
    """A worker whose close ends only once its idle wait ends, like ``bullmq.Worker``'s."""

    def __init__(self) -> None:
        self.waiting: asyncio.Future[Any] | None = None


async def test_a_wait_that_starts_after_the_close_is_cancelled() -> None:
    worker = LateWaiter()
    loop = asyncio.get_running_loop()
    closing: asyncio.Future[None] = loop.create_future()
    canceller = asyncio.ensure_future(_cancel_late_waits([worker], closing))
    await asyncio.sleep(0)
    worker.waiting = loop.create_future()  # the fetch begins its BZPOPMIN after close()
    late = worker.waiting
    late.add_done_callback(lambda _: closing.set_result(None))
    await asyncio.wait_for(canceller, 10)
    assert late.cancelled() and closing.done()


async def test_nothing_is_cancelled_once_closed() -> None:
    worker = LateWaiter()
    loop = asyncio.get_running_loop()
    worker.waiting = loop.create_future()
    closing: asyncio.Future[None] = loop.create_future()
    closing.set_result(None)
    await asyncio.wait_for(_cancel_late_waits([worker], closing), 10)
    assert not worker.waiting.done()
