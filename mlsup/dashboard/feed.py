"""The dashboard's one link to the supervisor: it polls, keeps the activity ring, and publishes
the page's snapshot to every open event stream.

Why server-sent events fed by one poller, rather than each browser polling: one poll of the
supervisor (two control requests every :data:`~mlsup.defaults.DASHBOARD_POLL_S`) serves any
number of open tabs; a tab receives a snapshot only when it changed, so an idle page costs one
keep-alive comment per :data:`~mlsup.defaults.DASHBOARD_KEEPALIVE_S`; ``EventSource``
reconnects by itself after a restart of the server; and the activity ring needs continuous
samples whether or not a page is open. The supervisor pushes nothing itself (its control plane
is request/reply), so a poll at the edge is the cheapest honest source.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec

from mlsup import defaults
from mlsup.dashboard.activity import ActivityRing, Histogram, LatencySource
from mlsup.dashboard.view import ModelRow, build_view, read_row
from mlsup.errors import MlsupError
from mlsup.proxy import AsyncSupervisorProxy, aconnect

__all__ = ["Connect", "DashboardFeed"]

#: Makes a proxy on the supervisor; the feed owns (and closes) what it returns.
Connect = Callable[[], Awaitable[AsyncSupervisorProxy]]


class DashboardFeed:
    """Polls the supervisor and publishes the page's snapshot (JSON bytes) with a version."""

    def __init__(
        self,
        runtime: Path,
        *,
        connect: Connect | None = None,
        latency: LatencySource | None = None,
        poll_s: float = defaults.DASHBOARD_POLL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.runtime = runtime
        self._connect = connect or (lambda: aconnect(runtime))
        self._latency = latency
        self.poll_s = poll_s
        self._clock = clock
        self.ring = ActivityRing(
            defaults.DASHBOARD_ACTIVITY_WINDOW_S, defaults.DASHBOARD_SPARK_STEP_S
        )
        #: The models the supervisor last reported: the ids the page may act on or read logs of.
        self.known: frozenset[str] = frozenset()
        self.version = 0
        self.body = b""
        self._proxy: AsyncSupervisorProxy | None = None
        self._changed = asyncio.Condition()
        self._poke = asyncio.Event()
        self._closed = False

    # -- the supervisor ---------------------------------------------------------------------

    async def proxy(self) -> AsyncSupervisorProxy:
        """The proxy on the supervisor, connecting if needed (SupervisorUnavailable if none)."""
        if self._proxy is None:
            self._proxy = await self._connect()
        return self._proxy

    async def _drop_proxy(self) -> None:
        proxy, self._proxy = self._proxy, None
        if proxy is not None:
            await proxy.close()

    async def _read(self) -> tuple[list[ModelRow], list[Any]]:
        proxy = await self.proxy()
        rows = [read_row(row) for row in await proxy.status()]
        gpus: list[Any] = await proxy.request("gpus")
        return rows, gpus

    # -- polling ----------------------------------------------------------------------------

    async def poll_once(self) -> None:
        """Read the supervisor once, feed the ring, publish the snapshot if it changed."""
        problem = None
        rows: list[ModelRow] = []
        gpus: list[Any] = []
        try:
            rows, gpus = await asyncio.wait_for(self._read(), defaults.DASHBOARD_POLL_TIMEOUT_S)
        except (MlsupError, asyncio.TimeoutError) as exc:
            problem = str(exc) or f"the supervisor on {self.runtime} did not answer in time"
            await self._drop_proxy()
        now = self._clock()
        if problem is None:
            self.known = frozenset(row.model for row in rows)
            self.ring.forget(set(self.known))
            histograms, latency_problem = self._histograms()
            problem = latency_problem
            answered = self._latency is not None and latency_problem is None
            for row in rows:
                latency = histograms.get(row.model)
                self.ring.observe(now, row.model, row.generation, row.requests, latency,
                                  source_answered=answered)  # fmt: skip
        view = build_view(
            rows,
            gpus,
            lambda model: self.ring.activity(model, now),
            supervisor=str(self.runtime),
            problem=problem,
            window_s=self.ring.window_s,
            step_s=self.ring.step_s,
        )
        await self._publish(msgspec.json.encode(view))

    def _histograms(self) -> tuple[dict[str, Histogram], str | None]:
        if self._latency is None:
            return {}, None
        try:
            return dict(self._latency()), None
        except Exception as exc:  # noqa: BLE001 -- the embedding app's hook must not stop the page
            return {}, f"the latency source failed: {type(exc).__name__}: {exc}"

    async def _publish(self, body: bytes) -> None:
        if body == self.body:
            return
        async with self._changed:
            self.body = body
            self.version += 1
            self._changed.notify_all()

    def poke(self) -> None:
        """Poll now rather than at the next tick (after a load or unload)."""
        self._poke.set()

    async def run(self) -> None:
        """Poll until :meth:`close`."""
        try:
            while not self._closed:
                await self.poll_once()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._poke.wait(), self.poll_s)
                self._poke.clear()
        finally:
            await self._drop_proxy()

    # -- subscribers ------------------------------------------------------------------------

    async def next_body(self, seen: int, timeout: float) -> tuple[int, bytes] | None:
        """The snapshot newer than version ``seen``, waiting up to ``timeout`` for one; None on
        timeout. Raises EOFError once the feed is closed."""

        def ready() -> bool:
            return self._closed or self.version > seen

        async with self._changed:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(ready), timeout)
            if self._closed:
                raise EOFError("the dashboard is stopping")
            return (self.version, self.body) if self.version > seen else None

    async def close(self) -> None:
        """Stop polling and end every event stream."""
        self._closed = True
        self._poke.set()
        async with self._changed:
            self._changed.notify_all()
