"""pyzmq's socket methods without their Python layer, for the per-message hot path.

``zmq.Socket.send`` and ``getsockopt`` are Python wrappers (argument checks, copy thresholds,
option-name conversion) around the compiled methods of :class:`zmq.backend.Socket`, its base
class. On a small message they cost more than the message itself: measured with ``inproc``
PAIR sockets, a send and a receive take 2.6 us through the wrappers and 1.2 us through the
compiled methods, and ``getsockopt(RCVMORE)`` 2.2 us. Every ``zmq.Socket`` is a
``zmq.backend.Socket``, so calling these on one is exactly what the wrappers end up doing.
Used only with bytes frames and plain flags; anything else goes through the wrappers.
"""

from __future__ import annotations

from typing import Any, Final

import zmq
import zmq.backend

__all__ = ["more", "recv", "send"]

_Backend: Any = zmq.backend.Socket
#: The option as pyzmq's own enum member: ``get`` converts its argument with
#: ``SocketOption(option)``, which returns a member as it is but looks an int up (0.6 of the
#: 1.2 us a ``more()`` took with an int).
_RCVMORE: Final = zmq.SocketOption.RCVMORE

#: ``send(sock, data, flags=0)``: one bytes frame (copied, as the wrapper would for small data).
send: Final = _Backend.send
#: ``recv(sock, flags=0)``: the next frame as bytes.
recv: Final = _Backend.recv
_get: Final = _Backend.get


def more(sock: Any) -> bool:
    """Whether another frame of the message being received follows."""
    return bool(_get(sock, _RCVMORE))
