"""A fake transport: endpoints played in this process by handlers, on a fake clock.

The httpx ``MockTransport`` idea for mlsup's clients and proxy: pass a :class:`FakeTransport`
(threads) or :class:`AsyncFakeTransport` (asyncio) as ``transport=`` to
:class:`~mlsup.ipc.client.Client`, :func:`mlsup.connect` and their async twins, and every frame
they send is decoded with the real wire format and answered by a handler of yours, at once.
Time is fake: waiting a liveness slice for a reply that does not come advances the clock by a
slice, so a hung peer reaches a 300 s deadline in microseconds, and no test sleeps.

A handler gets each request (a decoded :class:`~mlsup.ipc.wire.Message` and its arguments,
tensors materialized) and returns the messages to answer with, in order, or ``None`` for none
(a peer that hangs, or died). :meth:`FakeTransport.kill` ends a pid: its endpoints stop
reading, and ``alive(pid)`` says so. :class:`mlsup.testing.fake_supervisor.FakeSupervisor`
builds a whole scripted supervisor on it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from mlsup import defaults
from mlsup.ipc.tensors import TensorCodec
from mlsup.ipc.wire import Kind, Message, decode

__all__ = ["AsyncFakeTransport", "FakeChannel", "FakeTransport", "Handler"]

#: Answers one request: ``handler(request, args)`` -> messages to send back (None: none).
Handler = Callable[[Message, Any], "Sequence[Message] | None"]


class _Endpoint:
    def __init__(self, handler: Handler, pid: int | None) -> None:
        self.handler = handler
        self.pid = pid


class FakeChannel:
    """One caller's connection to a fake endpoint (threads flavour)."""

    def __init__(self, transport: FakeTransport, endpoint: str) -> None:
        self.transport = transport
        self.endpoint = endpoint
        self.inbox: deque[list[Any]] = deque()
        self.closed = False

    def send(self, frames: Sequence[Any]) -> None:
        """Deliver a message: its answers, if any, are waiting in the inbox at once."""
        self.transport.deliver(self, [bytes(frame) for frame in frames])

    def receive(self) -> list[Any] | None:
        """The next answer, or None after one (fake) slice when there is none."""
        if self.inbox:
            return self.inbox.popleft()
        self.transport.now += defaults.LIVENESS_SLICE_S
        return None

    def exchange(self, frames: Sequence[Any]) -> list[Any] | None:
        """Send, then receive."""
        self.send(frames)
        return self.receive()

    def close(self, linger_ms: int = 0) -> None:
        """Close: later answers to this channel are dropped."""
        self.closed = True


class _AsyncFakeChannel:
    def __init__(self, channel: FakeChannel) -> None:
        self.channel = channel

    async def send(self, frames: Sequence[Any]) -> None:
        self.channel.send(frames)

    async def receive(self) -> list[Any] | None:
        frames = self.channel.receive()
        if frames is None:
            await asyncio.sleep(0)  # let the other tasks run, as a real wait would
        return frames

    async def exchange(self, frames: Sequence[Any]) -> list[Any] | None:
        self.channel.send(frames)
        return await self.receive()

    def close(self, linger_ms: int = 0) -> None:
        self.channel.close(linger_ms)


class FakeTransport:
    """A transport for threads whose endpoints are handlers in this process (see module)."""

    def __init__(self) -> None:
        self.now = 0.0  #: the fake clock (seconds)
        self.endpoints: dict[str, _Endpoint] = {}
        self.dead: set[int] = set()
        self.channels: list[FakeChannel] = []  #: every channel opened, for checks on cleanup
        self.received: list[Message] = []  #: every message the endpoints were sent
        self._codec = TensorCodec(None)

    def listen(self, endpoint: str, handler: Handler, *, pid: int | None = None) -> None:
        """Serve endpoint with handler, as process pid (``kill(pid)`` ends it)."""
        self.endpoints[endpoint] = _Endpoint(handler, pid)

    def kill(self, pid: int) -> None:
        """End process pid: its endpoints read nothing more, ``alive(pid)`` is False."""
        self.dead.add(pid)

    def deliver(self, channel: FakeChannel, frames: list[bytes]) -> None:
        """Hand a message to channel's endpoint and queue its answers (used by channels)."""
        endpoint = self.endpoints.get(channel.endpoint)
        if endpoint is None or (endpoint.pid is not None and endpoint.pid in self.dead):
            return  # nobody reads it, as with ZeroMQ
        request = decode(frames)
        self.received.append(request)
        if request.kind is Kind.RELEASE:
            return
        answers = endpoint.handler(request, self._codec.decode_args(request))
        for answer in answers or ():
            encoded, _ = self._codec.encode(answer, use_shm=False)
            channel.inbox.append([bytes(frame) for frame in encoded])

    def open(self, endpoint: str) -> Any:
        """A new channel to endpoint."""
        channel = FakeChannel(self, endpoint)
        self.channels.append(channel)
        return channel

    def listening(self, endpoint: str) -> bool:
        return endpoint in self.endpoints

    def alive(self, pid: int) -> bool:
        return pid not in self.dead

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> Any:
        """Advance the fake clock; nothing waits."""
        self.now += seconds

    @property
    def open_channels(self) -> int:
        """Channels opened and not closed (pooled ones count)."""
        return sum(not channel.closed for channel in self.channels)


class AsyncFakeTransport(FakeTransport):
    """:class:`FakeTransport` for asyncio: channels and sleep are awaitable, and each wait
    yields to the other tasks once."""

    def open(self, endpoint: str) -> Any:
        return _AsyncFakeChannel(super().open(endpoint))

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)
