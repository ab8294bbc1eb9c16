"""An asyncio server for control planes: every request runs in its own task.

Unlike :class:`~mlsup.ipc.server.Server` (one request at a time, for workers), a slow handler
here (waiting for a lease, say) does not hold up the others. Replies are small: tensors travel
as frames, never lent in shared memory.

The request tasks live in an :class:`asyncio.TaskGroup` owned by :meth:`AsyncServer.serve`: a
handler's failure is its caller's error reply, and anything else that fails in a request task
(a bug) ends ``serve()`` with that exception, for whoever awaits it to act on, rather than
vanishing in a forgotten task. Cancelling ``serve()`` cancels and awaits every request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import zmq
import zmq.asyncio

from mlsup.errors import MlsupError
from mlsup.ipc.endpoints import bind_router, check_endpoint, close_router
from mlsup.ipc.server import Operation, admit, failure
from mlsup.ipc.tensors import TensorCodec
from mlsup.ipc.wire import Kind, Message

__all__ = ["AsyncHandler", "AsyncServer"]

#: An async handler takes the request's arguments and returns the result.
AsyncHandler = Callable[[Any], Awaitable[Any]]


class AsyncServer:
    """Serves registered async operations on one endpoint, concurrently."""

    def __init__(self, endpoint: str, *, context: zmq.asyncio.Context | None = None) -> None:
        self.endpoint = check_endpoint(endpoint)
        self._context = context or zmq.asyncio.Context.instance()
        self._codec = TensorCodec(None)
        self._operations: dict[str, Operation] = {}
        self._socket: zmq.asyncio.Socket | None = None
        self._serving: asyncio.Task[Any] | None = None

    def register(self, op: str, handler: AsyncHandler) -> None:
        """Serve ``op`` with ``await handler(args)``."""
        self._operations[op] = Operation(handler)

    def bind(self) -> None:
        """Bind the endpoint; an ipc socket file is made private to this user."""
        self._socket = bind_router(self._context, self.endpoint)

    async def serve(self) -> None:
        """Receive requests until cancelled; each is handled in a task of its own."""
        if self._socket is None:
            self.bind()
        sock = self._socket
        assert sock is not None
        self._serving = asyncio.current_task()
        try:
            async with asyncio.TaskGroup() as requests:
                while True:
                    frames = await sock.recv_multipart(copy=False)
                    identity, body = frames[0].bytes, [frame.buffer for frame in frames[1:]]
                    requests.create_task(self._handle(sock, identity, body))
        finally:
            self._serving = None

    async def _handle(self, sock: zmq.asyncio.Socket, identity: bytes, body: list[Any]) -> None:
        request = admit(body, self._operations)
        if isinstance(request, Message):
            if request.kind is Kind.ERROR:
                await self._send(sock, identity, request)
            return
        message, operation = request
        try:
            result = await operation.handler(self._codec.decode_args(message))
            reply = Message(Kind.REPLY, message.id, args=result)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a handler's failure is the caller's answer
            reply = failure(message, exc)
        await self._send(sock, identity, reply)

    async def _send(self, sock: zmq.asyncio.Socket, identity: bytes, message: Message) -> None:
        try:
            frames, _ = self._codec.encode(message, use_shm=False)
        except MlsupError as exc:
            frames, _ = self._codec.encode(Message(Kind.ERROR, message.id, error=exc.to_wire()))
        with contextlib.suppress(zmq.ZMQError):  # the socket closed while we worked
            await sock.send_multipart([identity, *frames])

    async def close(self) -> None:
        """Stop serving (cancelling requests in progress), close the socket, remove its file."""
        serving = self._serving
        if serving is not None and serving is not asyncio.current_task():
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving
        close_router(self._socket, self.endpoint)
        self._socket = None
