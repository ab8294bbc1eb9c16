"""The transport seam: where a client's frames go, and how its driver waits for the answer.

The call core (:mod:`mlsup.ipc.callcore`, :mod:`mlsup.proxy_core`) never blocks. What does not
block it asks its transport directly: open a channel to an endpoint, read the clock, ask
whether a pid still runs. What blocks (sending, waiting one slice for a reply, pausing) it hands
to its driver as an effect, and a sync driver calls it while an async driver awaits it. So one
transport interface has two flavours, differing only in whether ``send``, ``receive`` and
``sleep`` are coroutines:

* :class:`ZmqTransport` (threads) and :class:`AsyncZmqTransport` (asyncio): DEALER sockets;
* :class:`mlsup.testing.transport.FakeTransport`: endpoints played in-process by scripts, on a
  fake clock, for tests that need no processes.

``receive`` waits at most one liveness slice (:data:`~mlsup.defaults.LIVENESS_SLICE_S`) and
returns ``None`` when nothing came, so that the core checks its deadline and its peer's life
between slices.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Sequence
from typing import Any, Protocol

import zmq
import zmq.asyncio

from mlsup import defaults
from mlsup.errors import TransportError
from mlsup.ipc import zmqfast
from mlsup.ipc.endpoints import ipc_path
from mlsup.process_identity import process_alive

__all__ = [
    "AsyncChannel",
    "AsyncZmqTransport",
    "Channel",
    "Transport",
    "ZmqTransport",
    "peer_identity",
]


class Channel(Protocol):
    """A connection to one endpoint, used by one call at a time (threads flavour)."""

    def send(self, frames: Sequence[Any]) -> None:
        """Send one message."""

    def receive(self) -> list[Any] | None:
        """The next message's frames, or None when nothing came within one slice."""

    def exchange(self, frames: Sequence[Any]) -> list[Any] | None:
        """Send, then receive: a call's first round in one effect."""

    def close(self, linger_ms: int = 0) -> None:
        """Close; ``linger_ms`` lets queued messages out that long."""


class AsyncChannel(Protocol):
    """The asyncio flavour of :class:`Channel`."""

    async def send(self, frames: Sequence[Any]) -> None:
        """Send one message."""

    async def receive(self) -> list[Any] | None:
        """The next message's frames, or None when nothing came within one slice."""

    async def exchange(self, frames: Sequence[Any]) -> list[Any] | None:
        """Send, then receive: a call's first round in one effect."""

    def close(self, linger_ms: int = 0) -> None:
        """Close (cancelling a receive in progress); ``linger_ms`` as for :class:`Channel`."""


class Transport(Protocol):
    """What the call core asks of the outside world. ``open`` returns a :class:`Channel` or an
    :class:`AsyncChannel`, and ``sleep`` blocks or is awaited, by flavour."""

    def open(self, endpoint: str) -> Any:
        """A new channel connected to endpoint (connecting never blocks)."""

    def listening(self, endpoint: str) -> bool:
        """Whether something may listen on endpoint (an ipc socket file exists)."""

    def alive(self, pid: int) -> bool:
        """Whether the process pid still runs."""

    def clock(self) -> float:
        """Monotonic seconds: what deadlines are measured on."""

    def sleep(self, seconds: float) -> Any:
        """Pause (blocks, or returns an awaitable, by flavour)."""


def peer_identity() -> bytes:
    """A DEALER identity that names this process, so a server can tell when its borrower died."""
    return f"mlsup:{os.getpid()}:{secrets.token_hex(4)}".encode()


def _dealer(context: zmq.Context[Any], endpoint: str) -> Any:
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, defaults.SOCKET_LINGER_MS)
    sock.setsockopt(zmq.IDENTITY, peer_identity())
    # Set once, at creation: no socket option call on the hot path.
    sock.setsockopt(zmq.RCVTIMEO, int(defaults.LIVENESS_SLICE_S * 1000))
    sock.connect(endpoint)
    return sock


def _unsent(endpoint: str, exc: zmq.ZMQError) -> TransportError:
    """ZeroMQ's failure to send, as the transport error callers catch (the one boundary where
    zmq's errors are translated)."""
    return TransportError(f"cannot send to {endpoint}: {exc}", endpoint=endpoint)


class _ZmqChannel:
    __slots__ = ("_endpoint", "_sock")

    def __init__(self, sock: zmq.Socket[bytes], endpoint: str) -> None:
        self._sock, self._endpoint = sock, endpoint

    def send(self, frames: Sequence[Any]) -> None:
        try:
            if len(frames) == 1:
                zmqfast.send(self._sock, frames[0])  # the common case, without the wrappers
            else:
                self._sock.send_multipart(frames, copy=False)
        except zmq.ZMQError as exc:
            raise _unsent(self._endpoint, exc) from exc

    def receive(self) -> list[Any] | None:
        try:
            return zmqfast.receive(self._sock)
        except zmq.Again:
            return None

    def exchange(self, frames: Sequence[Any]) -> list[Any] | None:
        if len(frames) == 1:
            try:
                zmqfast.send(self._sock, frames[0])  # the hot path of small calls, inline
            except zmq.ZMQError as exc:
                raise _unsent(self._endpoint, exc) from exc
        else:
            self.send(frames)
        return self.receive()

    def close(self, linger_ms: int = 0) -> None:
        self._sock.close(linger=linger_ms)


class _AsyncZmqChannel:
    __slots__ = ("_endpoint", "_sock")

    def __init__(self, sock: zmq.asyncio.Socket, endpoint: str) -> None:
        self._sock, self._endpoint = sock, endpoint

    async def send(self, frames: Sequence[Any]) -> None:
        try:
            await self._sock.send_multipart(frames, copy=len(frames) == 1)
        except zmq.ZMQError as exc:
            raise _unsent(self._endpoint, exc) from exc

    async def receive(self) -> list[Any] | None:
        try:
            # pyzmq's asyncio sockets honour RCVTIMEO: the wait ends with zmq.Again after one
            # slice, and the unfinished receive is withdrawn (no message is lost).
            frames = await self._sock.recv_multipart(copy=False)
        except zmq.Again:
            return None
        return [frame.buffer for frame in frames]

    async def exchange(self, frames: Sequence[Any]) -> list[Any] | None:
        await self.send(frames)
        return await self.receive()

    def close(self, linger_ms: int = 0) -> None:
        self._sock.close(linger=linger_ms)


class _ZmqHost:
    """What both ZeroMQ flavours ask the operating system."""

    def listening(self, endpoint: str) -> bool:
        path = ipc_path(endpoint)
        return path is None or path.exists()

    def alive(self, pid: int) -> bool:
        return process_alive(pid)

    #: Monotonic seconds (the C function itself: the clock is read on every call).
    clock = staticmethod(time.monotonic)


class ZmqTransport(_ZmqHost):
    """ZeroMQ DEALER channels for threads; ``context`` defaults to the process's instance."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]] | None = None) -> None:
        self._context = context or zmq.Context.instance()

    def open(self, endpoint: str) -> Channel:
        return _ZmqChannel(_dealer(self._context, endpoint), endpoint)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class AsyncZmqTransport(_ZmqHost):
    """ZeroMQ DEALER channels for one asyncio event loop."""

    def __init__(self, context: zmq.asyncio.Context | None = None) -> None:
        self._context = context or zmq.asyncio.Context.instance()

    def open(self, endpoint: str) -> AsyncChannel:
        return _AsyncZmqChannel(_dealer(self._context, endpoint), endpoint)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
