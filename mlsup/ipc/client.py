"""Clients of a :class:`~mlsup.ipc.server.Server`: :class:`Client` (threads) and
:class:`AsyncClient` (asyncio).

Each call checks a DEALER socket out of a small pool, so concurrent callers never share a
socket (ZeroMQ sockets are not thread-safe) and no call waits behind another's reply. DEALER
rather than REQ: a call that timed out leaves REQ in a state where it can send nothing more,
while DEALER lets us drop the socket and carry on; ``mlsup bench ipc`` shows the round trip
costs the same as raw REQ/REP.

Every call has a deadline. A dead or hung peer yields :class:`~mlsup.errors.RequestTimeout`
when it passes, never a hang; the socket is then discarded, since a late reply could arrive.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import os
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import zmq
import zmq.asyncio

from mlsup import defaults
from mlsup.errors import (
    PeerGone,
    ProtocolError,
    RequestTimeout,
    TransportError,
    error_from_wire,
)
from mlsup.ipc.endpoints import check_endpoint
from mlsup.ipc.shm import AttachCache, ShmPool
from mlsup.ipc.tensors import TensorCodec
from mlsup.ipc.wire import Kind, Message, decode

__all__ = ["AsyncClient", "Client"]


def peer_identity() -> bytes:
    """A DEALER identity that names this process, so a server can tell when its borrower died."""
    return f"mlsup:{os.getpid()}:{secrets.token_hex(4)}".encode()


class _ClientCore:
    """What both clients share: ids, the codec, borrowed-block releases, reply handling."""

    def __init__(
        self,
        endpoint: str,
        timeout: float,
        pool: ShmPool | None,
        threshold: int,
    ) -> None:
        self.endpoint = check_endpoint(endpoint)
        self.timeout = timeout
        self._own_pool = pool is None
        self._codec = TensorCodec(
            ShmPool() if pool is None else pool, AttachCache(), threshold=threshold
        )
        self._ids = itertools.count(1)
        # Names of borrowed reply blocks whose views are all gone; appended by finalizers
        # (any thread, any time), drained into the next message we send.
        self._releases: collections.deque[str] = collections.deque()
        self._closed = False

    def _request(self, op: str, args: Any) -> tuple[int, list[Any], list[str]]:
        if self._closed:
            raise TransportError(f"client of {self.endpoint} is closed")
        rid = next(self._ids)
        frames, lent = self._codec.encode(
            Message(Kind.REQUEST, rid, op=op, args=args, releases=self._drain_releases())
        )
        return rid, frames, lent

    def _drain_releases(self) -> list[str]:
        names = []
        while self._releases:
            try:
                names.append(self._releases.popleft())
            except IndexError:  # a concurrent drain took the last one
                break
        return names

    def _take_back(self, lent: list[str], *, answered: bool) -> None:
        pool = self._codec.pool
        assert pool is not None
        for name in lent:
            if answered:
                pool.give_back(name)
            else:
                # The server may still be reading the block: never reuse it.
                pool.discard(name)

    def _parse(self, frames: list[Any], rid: int) -> Message | None:
        """The decoded reply, or None for a stale one (of an earlier, abandoned request)."""
        message = decode(frames)
        if message.id != rid:
            return None
        if message.kind not in (Kind.REPLY, Kind.ERROR, Kind.ITEM):
            raise ProtocolError(f"unexpected {message.kind.name} message from {self.endpoint}")
        return message

    def _result(self, message: Message, op: str) -> Any:
        if message.kind is Kind.ERROR:
            raise error_from_wire(message.error)
        return self._codec.decode_args(message, on_collected=self._releases.append)

    def _timeout(self, op: str, timeout: float) -> RequestTimeout:
        return RequestTimeout(
            f"no reply to {op!r} from {self.endpoint} within {timeout:g} s; "
            "the server is dead, hung or overloaded",
            endpoint=self.endpoint,
            op=op,
        )

    def _close_pool(self) -> None:
        if self._own_pool and self._codec.pool is not None:
            self._codec.pool.close()
        self._codec.cache.clear()


class Client(_ClientCore):
    """A thread-safe client of one server endpoint.

    ``timeout`` is the default deadline of a call in seconds; ``pool`` the shared-memory pool
    for request tensors (default: a private one); ``threshold`` the size from which tensors
    travel through shared memory.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        timeout: float = defaults.REQUEST_TIMEOUT_S,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        pool: ShmPool | None = None,
        threshold: int = defaults.SHM_THRESHOLD_BYTES,
    ) -> None:
        super().__init__(endpoint, timeout, pool, threshold)
        self._context = context or zmq.Context.instance()
        self._lock = threading.Lock()
        self._idle: list[zmq.Socket[bytes]] = []

    def _checkout(self) -> zmq.Socket[bytes]:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        sock = self._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, defaults.SOCKET_LINGER_MS)
        sock.setsockopt(zmq.IDENTITY, peer_identity())
        sock.setsockopt(zmq.RCVTIMEO, int(defaults.LIVENESS_SLICE_S * 1000))
        sock.connect(self.endpoint)
        return sock

    def _checkin(self, sock: zmq.Socket[bytes]) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < defaults.CLIENT_IDLE_SOCKETS:
                self._idle.append(sock)
                return
        sock.close(linger=0)

    def _recv(  # noqa: PLR0917 - a private helper of call() and stream()
        self,
        sock: zmq.Socket[bytes],
        rid: int,
        deadline: float,
        op: str,
        timeout: float,
        alive: Callable[[], bool] | None,
    ) -> Message:
        # Every socket waits in slices of LIVENESS_SLICE_S (set once, at creation: no socket
        # option call on the hot path); between slices we check the deadline and the peer.
        while True:
            if time.monotonic() >= deadline:
                raise self._timeout(op, timeout)
            try:
                frames: list[Any] = [sock.recv(copy=True)]
                while sock.getsockopt(zmq.RCVMORE):
                    frames.append(sock.recv(copy=False).buffer)
            except zmq.Again:
                if alive is not None and not alive():
                    raise PeerGone(
                        f"the process serving {self.endpoint} died during {op!r}",
                        endpoint=self.endpoint,
                        op=op,
                    ) from None
                continue
            message = self._parse(frames, rid)
            if message is not None:
                return message

    def call(
        self,
        op: str,
        args: Any = None,
        *,
        timeout: float | None = None,
        alive: Callable[[], bool] | None = None,
    ) -> Any:
        """Send ``op(args)`` and return the result; raises the server's error, typed.

        With ``alive``, :class:`PeerGone` is raised as soon as ``alive()`` says the server
        died (it is asked every ``LIVENESS_SLICE_S`` of waiting).
        """
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        rid, frames, lent = self._request(op, args)
        sock = self._checkout()
        answered = False
        try:
            if len(frames) == 1:
                sock.send(frames[0])
            else:
                sock.send_multipart(frames, copy=False)
            message = self._recv(sock, rid, deadline, op, timeout, alive)
            answered = True
            if message.kind is Kind.ITEM:
                raise ProtocolError(f"{op!r} streams its result; use stream()")
            return self._result(message, op)
        finally:
            self._take_back(lent, answered=answered)
            if answered:
                self._checkin(sock)
            else:
                sock.close(linger=0)

    def stream(
        self,
        op: str,
        args: Any = None,
        *,
        timeout: float | None = None,
        alive: Callable[[], bool] | None = None,
    ) -> Iterator[Any]:
        """Send ``op(args)`` and yield the streamed items; ``timeout`` bounds each wait."""
        timeout = self.timeout if timeout is None else timeout
        rid, frames, lent = self._request(op, args)
        sock = self._checkout()
        finished = False
        try:
            sock.send_multipart(frames, copy=len(frames) == 1)
            while True:
                message = self._recv(sock, rid, time.monotonic() + timeout, op, timeout, alive)
                if lent:
                    self._take_back(lent, answered=True)
                    lent = []
                if message.kind is not Kind.ITEM:
                    finished = True
                    self._result(message, op)  # raises the error that ended the stream
                    return
                yield self._result(message, op)
        finally:
            self._take_back(lent, answered=False)
            if finished:
                self._checkin(sock)
            else:
                sock.close(linger=0)  # abandoned mid-stream: more items may still arrive

    def release_now(self) -> None:
        """Give back borrowed reply blocks without waiting for the next call."""
        names = self._drain_releases()
        if not names:
            return
        frames, _ = self._codec.encode(Message(Kind.RELEASE, 0, releases=names))
        sock = self._checkout()
        try:
            sock.send_multipart(frames)
        finally:
            self._checkin(sock)

    def close(self) -> None:
        """Give back borrowed blocks, close the sockets and this client's own pool."""
        if self._closed:
            return
        with contextlib.suppress(zmq.ZMQError):
            self.release_now()
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for sock in idle:
            sock.close(linger=defaults.CLOSE_LINGER_MS)  # lets the release message out
        self._close_pool()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_ClientCore):
    """The asyncio twin of :class:`Client`, for use from one event loop."""

    def __init__(
        self,
        endpoint: str,
        *,
        timeout: float = defaults.REQUEST_TIMEOUT_S,
        context: zmq.asyncio.Context | None = None,
        pool: ShmPool | None = None,
        threshold: int = defaults.SHM_THRESHOLD_BYTES,
    ) -> None:
        super().__init__(endpoint, timeout, pool, threshold)
        self._context = context or zmq.asyncio.Context.instance()
        self._idle: list[zmq.asyncio.Socket] = []

    def _checkout(self) -> zmq.asyncio.Socket:
        if self._idle:
            return self._idle.pop()
        sock = self._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, defaults.SOCKET_LINGER_MS)
        sock.setsockopt(zmq.IDENTITY, peer_identity())
        sock.connect(self.endpoint)
        return sock

    def _checkin(self, sock: zmq.asyncio.Socket) -> None:
        if not self._closed and len(self._idle) < defaults.CLIENT_IDLE_SOCKETS:
            self._idle.append(sock)
        else:
            sock.close(linger=0)

    async def _recv(
        self, sock: zmq.asyncio.Socket, rid: int, deadline: float, op: str, timeout: float
    ) -> Message:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._timeout(op, timeout)
            try:
                frames = await asyncio.wait_for(sock.recv_multipart(copy=False), remaining)
            except asyncio.TimeoutError:
                raise self._timeout(op, timeout) from None
            message = self._parse([frame.buffer for frame in frames], rid)
            if message is not None:
                return message

    async def call(self, op: str, args: Any = None, *, timeout: float | None = None) -> Any:
        """Send ``op(args)`` and return the result; raises the server's error, typed."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        rid, frames, lent = self._request(op, args)
        sock = self._checkout()
        answered = False
        try:
            await sock.send_multipart(frames, copy=len(frames) == 1)
            message = await self._recv(sock, rid, deadline, op, timeout)
            answered = True
            if message.kind is Kind.ITEM:
                raise ProtocolError(f"{op!r} streams its result; use stream()")
            return self._result(message, op)
        finally:
            self._take_back(lent, answered=answered)
            if answered:
                self._checkin(sock)
            else:
                sock.close(linger=0)

    async def stream(
        self, op: str, args: Any = None, *, timeout: float | None = None
    ) -> AsyncIterator[Any]:
        """Send ``op(args)`` and yield the streamed items; ``timeout`` bounds each wait."""
        timeout = self.timeout if timeout is None else timeout
        rid, frames, lent = self._request(op, args)
        sock = self._checkout()
        finished = False
        try:
            await sock.send_multipart(frames, copy=len(frames) == 1)
            while True:
                message = await self._recv(sock, rid, time.monotonic() + timeout, op, timeout)
                if lent:
                    self._take_back(lent, answered=True)
                    lent = []
                if message.kind is not Kind.ITEM:
                    finished = True
                    self._result(message, op)
                    return
                yield self._result(message, op)
        finally:
            self._take_back(lent, answered=False)
            if finished:
                self._checkin(sock)
            else:
                sock.close(linger=0)

    async def close(self) -> None:
        """Give back borrowed blocks, close the sockets and this client's own pool."""
        if self._closed:
            return
        names = self._drain_releases()
        if names:
            frames, _ = self._codec.encode(Message(Kind.RELEASE, 0, releases=names))
            sock = self._checkout()
            try:
                await sock.send_multipart(frames)
            finally:
                sock.close(linger=defaults.CLOSE_LINGER_MS)
        self._closed = True
        idle, self._idle = self._idle, []
        for sock in idle:
            sock.close(linger=0)
        self._close_pool()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
