"""The wire format: multipart frames ``[header, buffer, buffer, ...]``. Pure: no sockets, no I/O.

The header is one msgpack array of eight fields, in this order::

    [1,                           protocol version
     1,                           Kind: request, reply, error, item (of a stream), release
     42,                          request id, echoed by every answer to that request
     "embed",                     operation (requests only, else "")
     ["mlsup-..."] | nil,         shared-memory blocks the sender gives back
     {"type", "message", "context"} | nil,   the error (errors only)
     [<descriptor>, ...] | nil,   one per tensor: dtype, shape, place, frame|segment+offset, nbytes
     <args>]                      any msgpack data; tensors appear as Ext(TENSOR_EXT, index),
                                  small reply arrays whole as Ext(INLINE_EXT, ...)

An array rather than a map, and the arguments inline rather than packed apart, because the
header is packed and parsed on every call: one ``packb`` and one ``unpackb`` per message is
what keeps a round trip close to raw ZeroMQ (see ``mlsup bench ipc``).

Tensor bytes travel inside the header only for small reply arrays (inlined, see
:mod:`mlsup.ipc.extensions`); otherwise each is either a frame after the header
(``place == "frame"``) or a block of a shared-memory segment (``place == "shm"``). Where the
bytes go is decided by a *placer* handed to :func:`encode`; this module only checks and carries
descriptors. Pickle never crosses a socket: the only extension types are the tensor reference
and the inline array.

:func:`decode` validates everything a hostile peer could get wrong, within the limits of
:mod:`mlsup.defaults`, and raises :class:`~mlsup.errors.ProtocolError` for anything else.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

import msgpack

from mlsup import defaults
from mlsup.errors import ProtocolError
from mlsup.ipc.descriptors import (
    DTYPES,
    SEGMENT_NAME,
    TENSOR_EXT,
    Place,
    TensorDescriptor,
    TensorRef,
    tensor_descriptors,
)
from mlsup.ipc.extensions import ExtHook

__all__ = [
    "DTYPES",
    "SEGMENT_NAME",
    "TENSOR_EXT",
    "Kind",
    "Message",
    "Place",
    "Placed",
    "TensorDescriptor",
    "TensorRef",
    "decode",
    "encode",
    "encode_plain",
    "peek_request_id",
]

Buffer: TypeAlias = bytes | bytearray | memoryview

_HEADER_FIELDS: Final = 8
_VERSION: Final = defaults.PROTOCOL_VERSION
_local = threading.local()


def _packb(obj: Any) -> bytes:
    """``msgpack.packb`` with this thread's packer: ``packb`` builds a Packer (and its
    buffer) per call, which costs more than packing a small header (1.4 vs 0.9 us).
    A packer resets its buffer after a failed pack, so it stays reusable."""
    try:
        packer: msgpack.Packer = _local.packer
    except AttributeError:
        packer = _local.packer = msgpack.Packer()
    data: bytes = packer.pack(obj)
    return data


def _packb_with(obj: Any, default: Callable[[Any], Any]) -> bytes:
    """:func:`_packb` with this thread's packer for ``default`` (msgpack's hook for objects
    it cannot pack itself)."""
    try:
        packers: dict[Any, msgpack.Packer] = _local.packers
    except AttributeError:
        packers = _local.packers = {}
    packer = packers.get(default)
    if packer is None:
        packer = packers[default] = msgpack.Packer(default=default)
    data: bytes = packer.pack(obj)
    return data


_MAX_REQUEST_ID: Final = (1 << 63) - 1
_MOST_FRAMES: Final = defaults.MAX_FRAMES + 1  # the header and its buffer frames
_unpackb: Final = msgpack.unpackb
_MAX_OP_LEN: Final = 128


class Kind(enum.IntEnum):
    """What a message is."""

    REQUEST = 1  #: a call of ``op`` with ``args``
    REPLY = 2  #: the result of a request (also ends a stream)
    ERROR = 3  #: the request failed; ``error`` says why
    ITEM = 4  #: one item of a streamed result; more follow, then a REPLY or ERROR
    RELEASE = 5  #: one-way: gives back borrowed shared-memory blocks (names in ``releases``)


_KINDS: Final = {int(kind): kind for kind in Kind}
# Members as module globals where every message reads them: on Python 3.11, ``Kind.ERROR`` is
# a descriptor lookup (0.14 us), a global 0.02 us.
_REQUEST: Final = Kind.REQUEST
_ERROR: Final = Kind.ERROR
_ARRAY_OF_EIGHT: Final = b"\x98"  # msgpack fixarray of 8


@dataclass(frozen=True, slots=True)
class Placed:
    """What a placer made of one tensor: its descriptor and, for place FRAME, its bytes."""

    descriptor: TensorDescriptor
    buffer: Buffer | None = None


#: A placer turns one object msgpack cannot pack (a tensor) into a Placed, or into a plain
#: stand-in value. ``frame`` is the index the next buffer frame will get. It raises TypeError
#: for objects that cannot travel.
Placer: TypeAlias = Callable[[Any, int], Any]


@dataclass(slots=True)
class Message:
    """One decoded (or to-be-encoded) message.

    After :func:`decode`, ``args`` holds :class:`TensorRef` placeholders where tensors were,
    ``tensors`` their validated descriptors and ``buffers`` the frames after the header.
    """

    kind: Kind
    id: int
    op: str = ""
    args: Any = None
    error: dict[str, Any] | None = None
    releases: list[str] = field(default_factory=list)
    tensors: list[TensorDescriptor] = field(default_factory=list)
    buffers: list[Buffer] = field(default_factory=list)


def _refuse(obj: Any, frame: int) -> Placed:
    raise TypeError(f"cannot send an object of type {type(obj).__name__}")


def _leading_fields(message: Message, descriptors: list[dict[str, Any]] | None) -> tuple[Any, ...]:
    """The seven header fields before the arguments (see the module docstring)."""
    return (
        _VERSION,
        message.kind,  # an IntEnum packs as its int; ``.value`` is a slow descriptor
        message.id,
        message.op,
        message.releases or None,
        message.error,
        descriptors,
    )


def encode_plain(message: Message, default: Callable[[Any], Any] | None = None) -> bytes | None:
    """The header of a message whose arguments hold no tensor, in one ``packb``; else None.

    The hot path of small calls: the same bytes :func:`encode` would make, without its
    machinery. None also when the header would be too large (:func:`encode` says why).
    ``default`` may turn what msgpack cannot pack into something it can (a small array into
    an inline extension, :mod:`mlsup.ipc.extensions`), or raise TypeError to decline.
    """
    if message.buffers:
        return None
    # One tuple, spelled out: this runs for every small message on both sides.
    fields = (
        _VERSION,
        message.kind,
        message.id,
        message.op,
        message.releases or None,
        message.error,
        None,
        message.args,
    )
    try:
        header = _packb(fields) if default is None else _packb_with(fields, default)
    except (TypeError, ValueError, OverflowError):
        return None  # tensors, or something that cannot travel: encode() sorts it out
    return header if len(header) <= defaults.MAX_HEADER_BYTES else None


def encode(message: Message, placer: Placer = _refuse) -> list[Buffer]:
    """Frames for message: the msgpack header, then one frame per tensor placed as a frame.

    ``placer`` is called for every object msgpack cannot encode itself (tensors). Raises
    :class:`ProtocolError` if the arguments hold something that cannot travel.
    """
    buffers: list[Buffer] = list(message.buffers)
    descriptors: list[dict[str, Any]] = []

    def default(obj: Any) -> Any:
        placed = placer(obj, len(buffers))
        if not isinstance(placed, Placed):
            return placed  # a plain stand-in (a numpy scalar's Python value, say)
        if placed.buffer is not None:
            buffers.append(placed.buffer)
        descriptors.append(placed.descriptor.to_wire())
        return msgpack.ExtType(TENSOR_EXT, (len(descriptors) - 1).to_bytes(4, "big"))

    try:
        # The arguments first: packing them is what finds the tensors. msgpack concatenates,
        # so the seven leading fields and the packed arguments join into one array.
        args = msgpack.packb(message.args, default=default)
        head = _packb(_leading_fields(message, descriptors or None))
    except (TypeError, ValueError, OverflowError) as exc:
        what = message.op or message.kind.name
        raise ProtocolError(f"arguments of {what} cannot travel: {exc}") from exc
    header = _ARRAY_OF_EIGHT + head[1:] + args
    if len(header) > defaults.MAX_HEADER_BYTES:
        raise ProtocolError(
            f"header of {len(header)} bytes exceeds {defaults.MAX_HEADER_BYTES}; "
            "send large data as numpy arrays, which travel outside the header"
        )
    return [header, *buffers]


#: Bytes of a header that can hold its first three fields (array header, version, kind and
#: request id: 5 + 9 + 9 + 9 at most): all :func:`peek_request_id` ever reads.
_PEEK_BYTES: Final = 32


def peek_request_id(header: Buffer) -> int:
    """The request id of a header that failed to decode, or 0: used to address error replies.

    Reads only the leading fields, so that a huge rejected header costs nothing more.
    """
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=_PEEK_BYTES)
    unpacker.feed(bytes(memoryview(header)[:_PEEK_BYTES]))
    try:
        if unpacker.read_array_header() < 3:
            return 0
        unpacker.skip()  # version
        unpacker.skip()  # kind
        rid = unpacker.unpack()
    except Exception:  # noqa: BLE001 - any garbage, or cut short: there is no id to find
        return 0
    return rid if type(rid) is int and 0 <= rid <= _MAX_REQUEST_ID else 0


def decode(frames: Sequence[Buffer], max_header_bytes: int = defaults.MAX_HEADER_BYTES) -> Message:
    """Parse and validate frames into a :class:`Message`; :class:`ProtocolError` otherwise.

    ``max_header_bytes`` bounds the header (a server's ``max_message_bytes`` setting); it is
    checked before anything is parsed.
    """
    count = len(frames)
    if not count:
        raise ProtocolError("empty message")
    if count > _MOST_FRAMES:
        raise ProtocolError(f"{count - 1} buffer frames exceed {defaults.MAX_FRAMES}")
    header_bytes = frames[0]
    if len(header_bytes) > max_header_bytes:
        raise ProtocolError(
            f"header of {len(header_bytes)} bytes exceeds {max_header_bytes}; "
            "send large data as numpy arrays, which travel outside the header"
        )
    refs = ExtHook()
    try:
        header = _unpackb(header_bytes, strict_map_key=True, ext_hook=refs)
    except ProtocolError:
        raise
    except Exception as exc:  # msgpack raises several types for malformed input
        raise ProtocolError(f"malformed header: {exc}") from exc
    if type(header) is not list or len(header) != _HEADER_FIELDS:
        raise ProtocolError(f"header is not an array of {_HEADER_FIELDS} fields")
    version, kind_value, rid, op, releases, error, raw_tensors, args = header
    # Every check below runs on every message: each is one test in the valid case, and the
    # failing one is told apart only when something failed.
    try:
        kind = _KINDS.get(kind_value) if version == _VERSION else None
    except TypeError:  # an unhashable kind (an array, a map): no kind of ours
        kind = None
    if kind is None:
        if version != _VERSION:
            raise ProtocolError(
                f"protocol version {version!r} is not {_VERSION}; upgrade mlsup on both sides"
            )
        raise ProtocolError(f"unknown message kind {kind_value!r}")
    if type(rid) is not int or not 0 <= rid <= _MAX_REQUEST_ID:
        raise ProtocolError(f"request id {rid!r} is not an integer in [0, 2**63)")
    if type(op) is not str or len(op) > _MAX_OP_LEN:
        raise ProtocolError("operation must be a string of at most 128 characters")
    if not op and kind is _REQUEST:
        raise ProtocolError("request without an operation")
    if type(error) is not dict:
        if kind is _ERROR:
            raise ProtocolError("error message without an error map")
        error = None
    if count == 1 and raw_tensors is None:  # the common small message: no tensor, no frame
        if refs.highest >= 0:
            raise ProtocolError(f"tensor reference {refs.highest} but no descriptors")
        # Positional: a keyword call of the dataclass costs twice as much, on every message.
        return Message(
            kind, rid, op, args, error, [] if releases is None else _releases(releases), [], []
        )
    buffers = list(frames[1:])
    tensors = [] if raw_tensors is None else tensor_descriptors(raw_tensors, buffers)
    if refs.highest >= len(tensors):
        raise ProtocolError(f"tensor reference {refs.highest} but {len(tensors)} descriptors")
    return Message(
        kind,
        rid,
        op,
        args,
        error,
        [] if releases is None else _releases(releases),
        tensors,
        buffers,
    )


def _releases(releases: Any) -> list[str]:
    if type(releases) is not list:
        raise ProtocolError("releases must be a list")
    for name in releases:
        if type(name) is not str or not SEGMENT_NAME.fullmatch(name):
            raise ProtocolError(f"release of a foreign segment name {name!r}")
    return releases
