"""The serving side of the bridge: a ROUTER socket that dispatches requests to handlers.

Requests are handled one at a time, in the serving thread, in arrival order: a worker runs one
model, and most runtimes are not re-entrant. Nothing a peer sends can stop the server: every
malformed, hostile or failing request gets an error reply (a :class:`ProtocolError` for bad
frames) and the loop goes on.

Reply tensors are lent to the caller in shared memory, but only to callers whose identity names
their pid (our clients do), so that blocks lent to a process that died are taken back.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import zmq

from mlsup import defaults
from mlsup.errors import InvalidArgument, MlsupError, ProtocolError, RemoteError
from mlsup.ipc import zmqfast
from mlsup.ipc.endpoints import bind_router, check_endpoint, close_router
from mlsup.ipc.shm import AttachCache, ShmPool
from mlsup.ipc.tensors import TensorCodec
from mlsup.ipc.wire import Kind, Message, decode, peek_request_id
from mlsup.process_identity import process_alive

__all__ = ["Handler", "Operation", "Server", "admit", "failure"]

#: A handler takes the request's arguments and returns the result (or, for a stream
#: operation, an iterable of items).
Handler = Callable[[Any], Any]

_SNDMORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)
_NOBLOCK = int(zmq.NOBLOCK)
#: Requests a server keeps for later while it waits to send to a caller with a full queue.
_MAX_HELD = 1024
#: First and longest pause before retrying a reply to a caller whose queue is full (seconds).
_FULL_QUEUE_PAUSE_S = 0.0005
_FULL_QUEUE_PAUSE_MAX_S = 0.02
_IDENTITY = re.compile(rb"mlsup:(\d{1,10}):[0-9a-f]{8}")
_UNKNOWN: Any = object()  # a caller not seen yet (None means: seen, names no pid)
# Members as module globals on the hot path: on Python 3.11, ``Kind.REPLY`` is a descriptor
# lookup (0.14 us), a global 0.02 us.
_REQUEST, _REPLY, _RELEASE = Kind.REQUEST, Kind.REPLY, Kind.RELEASE


@dataclass(frozen=True)
class Operation:
    """A registered operation: its handler, and whether it streams."""

    handler: Callable[[Any], Any]
    stream: bool = False


def admit(
    body: list[Any],
    operations: dict[str, Operation],
    max_header_bytes: int = defaults.MAX_HEADER_BYTES,
) -> tuple[Message, Operation] | Message:
    """Decode a request and find its operation, or the reply that refuses it.

    A RELEASE comes back as itself (nothing to answer, only blocks to take back).
    """
    try:
        message = decode(body, max_header_bytes)
    except ProtocolError as exc:
        rid = peek_request_id(body[0]) if body else 0
        return Message(Kind.ERROR, rid, error=exc.to_wire())
    if message.kind is _RELEASE:
        return message
    if message.kind is not _REQUEST:
        error = ProtocolError(f"expected a request, got {message.kind.name}")
        return Message(Kind.ERROR, message.id, error=error.to_wire())
    operation = operations.get(message.op)
    if operation is None:
        offered = ", ".join(sorted(operations)) or "none"
        error = ProtocolError(
            f"unknown operation {message.op!r}; offered: {offered}", op=message.op
        )
        return Message(Kind.ERROR, message.id, error=error.to_wire())
    return message, operation


def failure(request: Message, exc: Exception) -> Message:
    """The error reply for a handler's exception: ours keep their type, others become
    :class:`RemoteError` naming the original class."""
    if not isinstance(exc, MlsupError):
        exc = RemoteError(
            f"{type(exc).__name__}: {exc}", remote_type=type(exc).__name__, op=request.op
        )
    return Message(Kind.ERROR, request.id, error=exc.to_wire())


class Server:
    """Serves registered operations on one endpoint.

    Register handlers with :meth:`register` (or the :meth:`operation` decorator), then
    :meth:`bind` and :meth:`serve` in the thread that should run them, or :meth:`start` a
    thread; :meth:`stop` ends the loop from anywhere. ``max_header_bytes`` bounds the header
    of a request (arguments and descriptors; tensor bytes travel apart).
    """

    def __init__(
        self,
        endpoint: str,
        *,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        pool: ShmPool | None = None,
        threshold: int = defaults.SHM_THRESHOLD_BYTES,
        borrower_check_interval: float = defaults.BORROWER_CHECK_INTERVAL_S,
        max_header_bytes: int = defaults.MAX_HEADER_BYTES,
    ) -> None:
        self.endpoint = check_endpoint(endpoint)
        self._context = context or zmq.Context.instance()
        self._own_pool = pool is None
        self._codec = TensorCodec(
            ShmPool() if pool is None else pool,
            AttachCache(),
            threshold=threshold,
            inline=defaults.INLINE_TENSOR_BYTES,
        )
        self._operations: dict[str, Operation] = {}
        self._loans: dict[str, tuple[bytes, int]] = {}  # block name -> (borrower, borrower pid)
        self._borrowers: dict[bytes, int | None] = {}  # identity -> pid it names
        self._borrower_check_interval = borrower_check_interval
        self._max_header_bytes = max_header_bytes
        self._socket: zmq.Socket[bytes] | None = None
        self._stopping = threading.Event()
        #: Requests received while a send waited on a full queue, served next (in order).
        self._held: deque[tuple[bytes, list[Any]]] = deque()
        self._thread: threading.Thread | None = None
        self.requests_served = 0

    # -- registration ---------------------------------------------------------------------------

    def register(self, op: str, handler: Handler, *, stream: bool = False) -> None:
        """Serve ``op`` with ``handler(args)``; ``stream=True`` if it yields several items."""
        if not op or len(op) > defaults.MAX_OPERATION_NAME:
            raise InvalidArgument(
                f"invalid operation name {op!r}: 1 to {defaults.MAX_OPERATION_NAME} characters",
                op=op,
            )
        self._operations[op] = Operation(handler, stream)

    def operation(self, op: str, *, stream: bool = False) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`register`."""

        def decorate(handler: Handler) -> Handler:
            self.register(op, handler, stream=stream)
            return handler

        return decorate

    # -- lifecycle ------------------------------------------------------------------------------

    def bind(self) -> None:
        """Bind the endpoint (an ipc socket file is made private to this user)."""
        self._socket = bind_router(self._context, self.endpoint)
        # Fail sends to callers that are gone instead of dropping them: a stream then stops.
        self._socket.setsockopt(zmq.ROUTER_MANDATORY, 1)

    def start(self) -> threading.Thread:
        """Bind if needed and serve in a daemon thread; returns the thread."""
        if self._socket is None:
            self.bind()
        thread = threading.Thread(
            target=self.serve, name=f"mlsup-server {self.endpoint}", daemon=True
        )
        self._thread = thread
        thread.start()
        return thread

    def stop(self, timeout: float | None = defaults.SERVER_STOP_TIMEOUT_S) -> None:
        """End :meth:`serve` (from any thread) and wait for a started thread."""
        self._stopping.set()
        if self._socket is not None:
            # Wake a serve() blocked in recv: any message will do, the flag is checked first.
            poke = self._context.socket(zmq.DEALER)
            try:
                poke.connect(self.endpoint)
                poke.send(b"", zmq.NOBLOCK)
            except zmq.ZMQError:
                pass  # the receive timeout ends the loop all the same
            finally:
                poke.close(linger=defaults.CLOSE_LINGER_MS)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def close(self) -> None:
        """Stop, close the sockets, remove the socket file and unlink our segments."""
        self.stop()
        close_router(self._socket, self.endpoint)
        self._socket = None
        if self._own_pool and self._codec.pool is not None:
            self._codec.pool.close()
        self._codec.cache.clear()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the loop -------------------------------------------------------------------------------

    def serve(self) -> None:
        """Serve until :meth:`stop`. Handlers run in this thread, one request at a time."""
        if self._socket is None:
            self.bind()
        sock = self._socket
        assert sock is not None
        # A blocking receive with a timeout is the cheapest wait ZeroMQ offers (a poller costs
        # microseconds a message); stop() wakes it with a message of its own.
        sock.setsockopt(zmq.RCVTIMEO, int(self._borrower_check_interval * 1000))
        next_check = time.monotonic() + self._borrower_check_interval
        while not self._stopping.is_set():
            if self._held:
                identity, frames = self._held.popleft()
            else:
                try:
                    identity = zmqfast.recv(sock)
                    frames = zmqfast.receive(sock)
                except zmq.Again:
                    frames = []
            if self._stopping.is_set():
                break
            if frames:
                self._handle(sock, identity, frames)
            if self._loans and time.monotonic() >= next_check:
                self._reclaim_dead_borrowers()
                next_check = time.monotonic() + self._borrower_check_interval

    def _handle(self, sock: zmq.Socket[bytes], identity: bytes, body: list[Any]) -> None:
        request = admit(body, self._operations, self._max_header_bytes)
        if isinstance(request, Message):  # refused: the error to send back, or nothing
            if request.kind is Kind.ERROR:
                self._send(sock, identity, request)
            else:
                for name in request.releases:
                    self._take_back(identity, name)
            return
        message, operation = request
        if message.releases:
            for name in message.releases:
                self._take_back(identity, name)
        self.requests_served += 1
        try:
            args = self._codec.decode_args(message) if message.tensors else message.args
            result = operation.handler(args)
            if operation.stream:
                self._stream(sock, identity, message, result)
                return
            self._send(sock, identity, Message(_REPLY, message.id, "", result, None, [], [], []))
        except Exception as exc:  # noqa: BLE001 - a handler's failure is the caller's answer
            self._send(sock, identity, failure(message, exc))

    def _stream(
        self, sock: zmq.Socket[bytes], identity: bytes, message: Message, items: Iterable[Any]
    ) -> None:
        """Send each item, then the end; stop generating as soon as the caller is gone (it
        closed its socket: it cancelled, disconnected or died), rather than run to the end."""
        sent = 0
        iterator = iter(items)
        try:
            for item in iterator:
                if not self._send(sock, identity, Message(Kind.ITEM, message.id, args=item)):
                    print(
                        f"mlsup: stopped streaming {message.op!r}: its caller went away after "
                        f"{sent} items",
                        file=sys.stderr,
                        flush=True,
                    )
                    return
                sent += 1
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()  # a generator: release what it holds (llama.cpp stops decoding)
        self._send(sock, identity, Message(Kind.REPLY, message.id, args=None))

    def _borrower(self, identity: bytes) -> int | None:
        """The pid a caller's identity names (None: not one of our clients; lend nothing)."""
        try:
            return self._borrowers[identity]
        except KeyError:
            match = _IDENTITY.fullmatch(identity)
            pid = int(match.group(1)) if match is not None else None
            if len(self._borrowers) >= defaults.MAX_KNOWN_PEERS:
                self._borrowers.clear()  # a cache: forgetting costs one regex match a peer
            self._borrowers[identity] = pid
            return pid

    def _send(self, sock: zmq.Socket[bytes], identity: bytes, message: Message) -> bool:
        """Send message to identity; False when that caller is gone (nothing was sent)."""
        pid = self._borrowers.get(identity, _UNKNOWN)
        if pid is _UNKNOWN:
            pid = self._borrower(identity)
        try:
            frames, lent = self._codec.encode(message, pid is not None)
        except ProtocolError as exc:  # the result cannot travel: tell the caller why
            frames, lent = self._codec.encode(Message(Kind.ERROR, message.id, error=exc.to_wire()))
        if not self._send_identity(sock, identity):
            pool = self._codec.pool
            if pool is not None:
                for name in lent:
                    pool.give_back(name)  # never lent after all
            return False
        if lent and pid is not None:
            for name in lent:
                self._loans[name] = (identity, pid)
        if len(frames) == 1:
            zmqfast.send(sock, frames[0])  # the common case, without the wrappers' checks
        else:
            sock.send_multipart(frames, copy=False)
        return True

    def _send_identity(self, sock: zmq.Socket[bytes], identity: bytes) -> bool:
        """Send a reply's identity frame; False when that caller is gone or we are stopping.

        ROUTER_MANDATORY fails the frame for a caller that closed its socket. While a caller's
        queue is full (it reads a stream more slowly than we produce), a blocking send would
        wait forever, noticing neither the caller leaving nor :meth:`stop`; so the frame is
        sent without blocking and retried in short, growing pauses instead.
        """
        pause = _FULL_QUEUE_PAUSE_S
        while True:
            try:
                zmqfast.send(sock, identity, _SNDMORE_NOBLOCK)
                return True
            except zmq.Again:
                if self._stopping.is_set():
                    return False
                self._hold_incoming(sock)
                time.sleep(pause)
                pause = min(pause * 2, _FULL_QUEUE_PAUSE_MAX_S)
            except zmq.ZMQError as exc:
                if exc.errno != zmq.EHOSTUNREACH:
                    raise
                return False

    def _hold_incoming(self, sock: zmq.Socket[bytes]) -> None:
        """Receive what has arrived, without blocking, and keep it for :meth:`serve`.

        A caller that closed its socket is dropped by the ROUTER only once a receive reads the
        end of that caller's queue, so a send that waits on a full queue must receive too, or
        it would never learn that the caller left (EAGAIN for good, never EHOSTUNREACH).
        """
        while len(self._held) < _MAX_HELD:
            try:
                identity = zmqfast.recv(sock, _NOBLOCK)
            except zmq.Again:
                return
            self._held.append((identity, zmqfast.receive(sock)))

    def _take_back(self, identity: bytes, name: str) -> None:
        loan = self._loans.get(name)
        if loan is None or loan[0] != identity:
            return  # not lent, or lent to someone else: a peer cannot free others' blocks
        del self._loans[name]
        assert self._codec.pool is not None
        self._codec.pool.give_back(name)

    def _reclaim_dead_borrowers(self) -> None:
        pids = {pid for _, pid in self._loans.values()}
        dead = {pid for pid in pids if not process_alive(pid)}
        if not dead:
            return
        for name, (identity, pid) in list(self._loans.items()):
            if pid in dead:
                self._take_back(identity, name)

    @property
    def lent_blocks(self) -> int:
        """Shared-memory blocks currently lent to callers."""
        return len(self._loans)

    def operations(self) -> Iterable[str]:
        return self._operations.keys()
