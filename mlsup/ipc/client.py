"""Clients of a :class:`~mlsup.ipc.server.Server`: :class:`Client` (threads) and
:class:`AsyncClient` (asyncio).

Both are thin drivers of one :class:`~mlsup.ipc.callcore.CallCore`, which decides everything
(ids, reply matching, streams, deadlines, shared-memory loans); they only move its frames
through a transport and wait. So both behave alike: every call has a deadline, a dead or hung
peer yields :class:`~mlsup.errors.RequestTimeout` when it passes (never a hang), and with
``alive=`` a dead peer is :class:`~mlsup.errors.PeerGone` within one liveness slice.

DEALER sockets rather than REQ: a call that timed out leaves REQ in a state where it can send
nothing more, while DEALER lets us drop the socket and carry on; ``mlsup bench ipc`` shows the
round trip costs the same as raw REQ/REP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from mlsup import defaults
from mlsup.ipc.callcore import Alive, CallCore
from mlsup.ipc.plans import aiterate, arun, iterate, run
from mlsup.ipc.shm import ShmPool
from mlsup.ipc.transport import AsyncZmqTransport, Transport, ZmqTransport, peer_identity

__all__ = ["AsyncClient", "Client", "peer_identity"]


class _Driver:
    """What both clients are made of: a call core over a transport of their flavour."""

    def __init__(
        self,
        endpoint: str,
        *,
        timeout: float = defaults.REQUEST_TIMEOUT_S,
        transport: Transport | None = None,
        pool: ShmPool | None = None,
        threshold: int = defaults.SHM_THRESHOLD_BYTES,
    ) -> None:
        self.core = CallCore(
            endpoint,
            self._default_transport() if transport is None else transport,
            timeout=timeout,
            pool=pool,
            threshold=threshold,
        )
        self.endpoint = self.core.endpoint

    @staticmethod
    def _default_transport() -> Transport:
        raise NotImplementedError


class Client(_Driver):
    """A thread-safe client of one server endpoint.

    ``timeout`` is the default deadline of a call in seconds; ``transport`` where frames go
    (default: ZeroMQ); ``pool`` the shared-memory pool for request tensors (default: a private
    one); ``threshold`` the size from which tensors travel through shared memory.
    """

    _default_transport = ZmqTransport

    def call(
        self, op: str, args: Any = None, *, timeout: float | None = None, alive: Alive | None = None
    ) -> Any:
        """Send ``op(args)`` and return the result; raises the server's error, typed.

        With ``alive``, :class:`PeerGone` is raised as soon as ``alive()`` says the server
        died (it is asked every ``LIVENESS_SLICE_S`` of waiting).
        """
        return run(self.core.call(op, args, timeout=timeout, alive=alive))

    def stream(
        self, op: str, args: Any = None, *, timeout: float | None = None, alive: Alive | None = None
    ) -> Iterator[Any]:
        """Send ``op(args)`` and yield the streamed items; ``timeout`` bounds each wait."""
        return iterate(self.core.stream(op, args, timeout=timeout, alive=alive))

    def release_now(self) -> None:
        """Give back borrowed reply blocks without waiting for the next call."""
        run(self.core.release())

    def close(self) -> None:
        """Give back borrowed blocks, close the sockets and this client's own pool."""
        run(self.core.close())

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Driver):
    """:class:`Client` for one asyncio event loop: the same core, awaited."""

    _default_transport = AsyncZmqTransport

    async def call(
        self, op: str, args: Any = None, *, timeout: float | None = None, alive: Alive | None = None
    ) -> Any:
        """Send ``op(args)`` and return the result (see :meth:`Client.call`)."""
        return await arun(self.core.call(op, args, timeout=timeout, alive=alive))

    def stream(
        self, op: str, args: Any = None, *, timeout: float | None = None, alive: Alive | None = None
    ) -> AsyncIterator[Any]:
        """Send ``op(args)`` and iterate over the streamed items asynchronously."""
        return aiterate(self.core.stream(op, args, timeout=timeout, alive=alive))

    async def release_now(self) -> None:
        """Give back borrowed reply blocks without waiting for the next call."""
        await arun(self.core.release())

    async def close(self) -> None:
        """Give back borrowed blocks, close the sockets and this client's own pool."""
        await arun(self.core.close())

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
