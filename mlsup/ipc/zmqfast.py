"""pyzmq's socket methods without their Python layer, for the per-message hot path.

``zmq.Socket.send`` and ``getsockopt`` are Python wrappers (argument checks, copy thresholds,
option-name conversion) around the compiled methods of :class:`zmq.backend.Socket`, its base
class. On a small message they cost more than the message itself: measured with ``inproc``
PAIR sockets, a send and a receive take 2.6 us through the wrappers and 1.2 us through the
compiled methods, and ``getsockopt(RCVMORE)`` 2.2 us. Every ``zmq.Socket`` is a
``zmq.backend.Socket``, so calling these on one is exactly what the wrappers end up doing.
Used only with bytes frames and plain flags; anything else goes through the wrappers.

Whether more frames follow is read from the received frame itself (:func:`receive`): the
compiled ``recv(copy=False)`` reads RCVMORE in C, where ``get(RCVMORE)`` first converts its
argument to pyzmq's ``SocketOption`` enum (a send, receive and RCVMORE: 1.11 us with ``get``,
0.83 us from the frame).
"""

from __future__ import annotations

from typing import Any, Final

import zmq.backend

__all__ = ["receive", "recv", "send"]

_Backend: Any = zmq.backend.Socket

#: ``send(sock, data, flags=0)``: one bytes frame (copied, as the wrapper would for small data).
send: Final = _Backend.send
#: ``recv(sock, flags=0)``: the next frame as bytes.
recv: Final = _Backend.recv


def receive(sock: Any) -> list[Any]:
    """The frames of the next message: the first as bytes, any further ones as buffers
    (zero-copy views of the received frames). Raises ``zmq.Again`` when the socket's receive
    timeout passes first."""
    frame = recv(sock, 0, False)
    frames: list[Any] = [frame.bytes]
    while frame.more:
        frame = recv(sock, 0, False)
        frames.append(frame.buffer)
    return frames
