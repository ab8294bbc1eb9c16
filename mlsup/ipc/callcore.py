"""The sans-io core of a client: one object for both :class:`~mlsup.ipc.client.Client` and
:class:`~mlsup.ipc.client.AsyncClient`.

It owns request ids, the tensor codec, shared-memory loans (blocks this side lent for a
request, and reply blocks it borrowed), reply matching, streams and deadlines, and writes each
exchange once as a plan (:mod:`mlsup.ipc.plans`): the drivers only send, wait and hand back what
came.

Each exchange uses a channel of its own from a small pool, so concurrent callers never share a
socket (ZeroMQ sockets are not thread-safe) and no call waits behind another's reply. A
channel whose exchange did not finish cleanly (deadline, abandoned stream, failed send) is
closed rather than reused: a late reply could still arrive on it.
"""

from __future__ import annotations

import collections
import functools
import itertools
from collections.abc import Callable
from typing import Any

from mlsup import defaults
from mlsup.errors import PeerGone, ProtocolError, RequestTimeout, TransportError, error_from_wire
from mlsup.ipc.endpoints import check_endpoint
from mlsup.ipc.plans import Emit, Plan
from mlsup.ipc.shm import AttachCache, ShmPool
from mlsup.ipc.tensors import TensorCodec
from mlsup.ipc.transport import Transport
from mlsup.ipc.wire import Kind, Message, decode

__all__ = ["Alive", "CallCore"]

_partial = functools.partial

# Members as module globals on the hot path: on Python 3.11, ``Kind.ERROR`` is a descriptor
# lookup (0.14 us), a global 0.02 us.
_REQUEST, _ERROR, _ITEM = Kind.REQUEST, Kind.ERROR, Kind.ITEM
_ANSWERS = (Kind.REPLY, Kind.ERROR, Kind.ITEM)

#: Asked between slices of waiting: whether the serving process still runs.
Alive = Callable[[], bool]


class CallCore:
    """Calls to one endpoint, as plans. ``transport`` gives channels and the clock; ``timeout``
    is a call's default deadline (seconds); ``pool`` lends request tensors (default: a private
    pool); ``threshold`` is the size from which tensors travel through shared memory."""

    def __init__(
        self,
        endpoint: str,
        transport: Transport,
        *,
        timeout: float,
        pool: ShmPool | None,
        threshold: int,
    ) -> None:
        self.endpoint = check_endpoint(endpoint)
        self.transport = transport
        self._clock = transport.clock
        self.timeout = timeout
        self._own_pool = pool is None
        self._codec = TensorCodec(
            ShmPool() if pool is None else pool, AttachCache(), threshold=threshold
        )
        self._ids = itertools.count(1)
        # Names of borrowed reply blocks whose views are all gone; appended by finalizers
        # (any thread, any time), drained into the next message we send.
        self._releases: collections.deque[str] = collections.deque()
        self._idle: list[Any] = []  # channels ready for the next exchange
        self.closed = False

    @property
    def lent_bytes(self) -> int:
        """Bytes of shared memory lent for requests whose servers may still read them."""
        pool = self._codec.pool
        return pool.lent_bytes if pool is not None else 0

    # -- the exchanges --------------------------------------------------------------------------

    def call(
        self, op: str, args: Any, *, timeout: float | None = None, alive: Alive | None = None
    ) -> Plan[Any]:
        """Send ``op(args)``; returns the result or raises the server's error, typed.

        :class:`RequestTimeout` when the deadline passes; :class:`PeerGone` as soon as
        ``alive()`` (asked between slices of waiting) says the server died.
        """
        timeout = self.timeout if timeout is None else timeout
        deadline = self._clock() + timeout
        rid, frames, lent = self._request(op, args)
        channel = self._checkout()
        answered = False
        try:
            # Send and wait a first slice in one effect: most replies are there by then.
            got = yield _partial(channel.exchange, frames)
            message = self._match(got, rid)
            if message is None:
                message = yield from self._reply(channel, rid, deadline, op, timeout, alive, got)
            answered = True
            if message.kind is _ITEM:
                raise ProtocolError(f"{op!r} streams its result; use stream()")
            return self._result(message)
        finally:
            if lent:
                self._take_back(lent, answered=answered)
            self._checkin(channel, reusable=answered)

    def stream(
        self, op: str, args: Any, *, timeout: float | None = None, alive: Alive | None = None
    ) -> Plan[None]:
        """Send ``op(args)`` and emit the streamed items; ``timeout`` bounds each wait. An
        error that ends the stream is raised after the items before it."""
        timeout = self.timeout if timeout is None else timeout
        rid, frames, lent = self._request(op, args)
        channel = self._checkout()
        finished = False
        try:
            got = yield _partial(channel.exchange, frames)
            while True:
                deadline = self._clock() + timeout
                message = self._match(got, rid)
                if message is None:
                    message = yield from self._reply(
                        channel, rid, deadline, op, timeout, alive, got
                    )
                if lent:  # the server has read the request: its blocks are free again
                    self._take_back(lent, answered=True)
                    lent = []
                if message.kind is not _ITEM:
                    finished = True
                    self._result(message)  # raises the error that ended the stream
                    return
                yield Emit(self._result(message))
                got = yield channel.receive
        finally:
            self._take_back(lent, answered=False)
            self._checkin(channel, reusable=finished)

    def release(self) -> Plan[None]:
        """Give back borrowed reply blocks now rather than with the next request."""
        names = self._drain_releases()
        if not names:
            return
        frames, _ = self._codec.encode(Message(Kind.RELEASE, 0, releases=names))
        channel = self._checkout()
        try:
            yield functools.partial(channel.send, frames)
        finally:
            # Closing with a linger lets the release out while we go on.
            channel.close(defaults.CLOSE_LINGER_MS)

    def close(self) -> Plan[None]:
        """Give back borrowed blocks, then close the channels and this client's own pool."""
        if self.closed:
            return
        try:
            yield from self.release()
        except TransportError:
            pass  # the server is gone: nothing to give back to
        finally:
            self.abandon()

    def abandon(self) -> None:
        """Close at once, telling the server nothing (it is gone, or we are in a hurry)."""
        self.closed = True
        idle, self._idle = self._idle, []
        for channel in idle:
            channel.close()
        if self._own_pool and self._codec.pool is not None:
            self._codec.pool.close()
        self._codec.cache.clear()

    # -- the parts ------------------------------------------------------------------------------

    def _reply(  # noqa: PLR0917 - a private step of call() and stream()
        self,
        channel: Any,
        rid: int,
        deadline: float,
        op: str,
        timeout: float,
        alive: Alive | None,
        got: list[Any] | None,
    ) -> Plan[Message]:
        """Wait, a slice at a time, for the reply to request rid, after a first wait that
        brought ``got`` (None: nothing, or a stale reply)."""
        while True:
            if got is None and alive is not None and not alive():
                raise PeerGone(
                    f"the process serving {self.endpoint} died during {op!r}",
                    endpoint=self.endpoint,
                    op=op,
                )
            if self._clock() >= deadline:
                raise RequestTimeout(
                    f"no reply to {op!r} from {self.endpoint} within {timeout:g} s; "
                    "the server is dead, hung or overloaded",
                    endpoint=self.endpoint,
                    op=op,
                )
            got = yield channel.receive
            message = self._match(got, rid)
            if message is not None:
                return message

    def _match(self, frames: list[Any] | None, rid: int) -> Message | None:
        """The reply to request rid in frames; None for nothing, or for the late reply of an
        earlier, abandoned request (dropped)."""
        if frames is None:
            return None
        message = decode(frames)
        if message.id != rid:
            return None
        if message.kind not in _ANSWERS:
            raise ProtocolError(f"unexpected {message.kind.name} message from {self.endpoint}")
        return message

    def _request(self, op: str, args: Any) -> tuple[int, list[Any], list[str]]:
        if self.closed:
            raise TransportError(f"client of {self.endpoint} is closed")
        rid = next(self._ids)
        releases = self._drain_releases() if self._releases else []
        message = Message(_REQUEST, rid, op, args, None, releases, [], [])  # positional: cheaper
        frames, lent = self._codec.encode(message)
        return rid, frames, lent

    def _result(self, message: Message) -> Any:
        if message.kind is _ERROR:
            raise error_from_wire(message.error)
        if not message.tensors:
            return message.args  # the common small reply: nothing to materialize
        return self._codec.decode_args(message, on_collected=self._releases.append)

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
                pool.discard(name)  # the server may still be reading the block: never reuse it

    def _checkout(self) -> Any:
        try:
            return self._idle.pop()  # atomic: no lock needed to take one
        except IndexError:
            return self.transport.open(self.endpoint)

    def _checkin(self, channel: Any, *, reusable: bool) -> None:
        # No lock on this hot path: abandon() sets ``closed`` before it takes the idle list,
        # so a channel put back while it runs is either in the list it closes, or seen here.
        if reusable and not self.closed and len(self._idle) < defaults.CLIENT_IDLE_SOCKETS:
            self._idle.append(channel)
            if not self.closed:
                return
        channel.close()
