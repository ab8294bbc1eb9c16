"""``PreemptPush``: hears preemption requests the moment admission makes them.

Admission publishes each request to its victim's owner on the pub/sub channel
``boss:push:{host:pid}`` (see :mod:`keys`); every boss of that process subscribes to it once, at
connect, before it can be granted anything. A push costs the admission script one PUBLISH and
reaches the holder within one Redis round trip, where the renewal check (kept as the fallback
when a push is lost: subscriber disconnected, Redis restarted) takes up to a renew interval.

Pub/sub rather than a blocking list per holder: a publish to a dead or absent subscriber leaves
nothing behind in Redis (a list would need a TTL and a sweep), one connection serves every
lease of the process, and the measured delivery is the same single round trip
(``mlsup bench leases``: "preemption: request -> granted").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import redis.asyncio as aioredis
import redis.exceptions

from mlsup import defaults
from mlsup.kit.leases.priority import Priority
from mlsup.kit.leases.results import PreemptNotice

__all__ = ["PreemptPush", "PushedPreempt", "parse_push"]

_log = logging.getLogger(__name__)

#: What the listener hands on: the lease id and its request.
PushedPreempt = tuple[str, PreemptNotice]


def parse_push(data: str) -> PushedPreempt | None:
    """Parse a pushed ``lease_id|now_ms|deadline_ms|priority|requester``; None if malformed
    (anyone can publish on a channel: a bad message is dropped, never raised)."""
    parts = data.split("|", 4)
    if len(parts) != 5:
        return None
    lease_id, now, deadline, priority, requester = parts
    try:
        prio = Priority(int(priority)) if priority else None
        return lease_id, PreemptNotice(int(deadline), int(now), prio, requester)
    except ValueError:
        return None


class PreemptPush:
    """Subscribes to one channel and calls ``on_notice`` for each well-formed push.

    A lost connection is retried every :data:`~mlsup.defaults.LEASE_TRANSPORT_RETRY_S`; what
    was published meanwhile is lost, and the renewal check delivers it instead.
    """

    def __init__(
        self, client: aioredis.Redis, channel: str, on_notice: Callable[[PushedPreempt], None]
    ) -> None:
        self.channel = channel
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._on_notice = on_notice
        self._task: asyncio.Task[None] | None = None

    @property
    def listening(self) -> bool:
        """True while the listener task runs."""
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Subscribe (confirmed by Redis before this returns) and start listening."""
        await self._pubsub.subscribe(self.channel)
        self._task = asyncio.create_task(self._listen(), name="mlsup-preempt-push")

    async def _listen(self) -> None:
        while True:
            try:
                message = await self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=None
                )
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                # redis-py reconnects and resubscribes on the next read.
                _log.warning("preemption push channel %s lost: %s", self.channel, exc)
                await asyncio.sleep(defaults.LEASE_TRANSPORT_RETRY_S)
                continue
            if message is None or message.get("type") != "message":
                continue
            data = message["data"]
            pushed = parse_push(data.decode() if isinstance(data, bytes) else str(data))
            if pushed is None:
                _log.warning("ignored a malformed push on %s: %r", self.channel, data)
                continue
            try:
                self._on_notice(pushed)
            except Exception:  # noqa: BLE001 - the listener must outlive a bad notice
                _log.exception("handling a preemption push failed")

    async def stop(self) -> None:
        """Stop listening and close the subscription (a push after this is lost)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
