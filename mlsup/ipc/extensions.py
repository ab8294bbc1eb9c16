"""The msgpack extension types of the wire, and the hook that decodes them.

* ``TENSOR_EXT`` (1): a reference to a tensor described in the header's descriptor list (its
  bytes in a frame, a shared-memory block or CUDA memory): see :mod:`mlsup.ipc.descriptors`.
* ``INLINE_EXT`` (2): a small numpy array carried whole inside the header. Its payload is
  ``dtype code (1 byte), ndim (1 byte), ndim sizes (8 bytes each, little-endian), the bytes``.
  A reply of a few floats (an embedding) then costs one ``packb`` and one ``unpackb``, with no
  descriptor to build, check and materialize: 17 us less a call (``mlsup bench proxy``).

Only replies inline arrays (a server's :class:`~mlsup.ipc.tensors.TensorCodec` is made with
``inline=``): a request's header stays bounded by the server's ``max_message_bytes`` without
its tensors, as documented. Decoding accepts both ext types anywhere and checks every inline
payload (dtype, dimensions, sizes against the bytes present) before viewing it.
"""

from __future__ import annotations

import struct
from typing import Any, Final

import msgpack
import numpy as np

from mlsup import defaults
from mlsup.errors import ProtocolError
from mlsup.ipc.descriptors import DTYPES, TENSOR_EXT, TensorRef

__all__ = ["INLINE_EXT", "ExtHook", "inline_array"]

INLINE_EXT: Final = 2

#: Inline dtype codes: the wire's dtypes that numpy has, in a fixed order (the code is the index).
_NAMES: Final = tuple(name for name in DTYPES if name != "bfloat16")
_BY_CODE: Final = tuple(np.dtype(name) for name in _NAMES)
_CODE: Final = {dtype: code for code, dtype in enumerate(_BY_CODE)}
#: The payload head for each number of dimensions: dtype code, ndim, sizes.
_HEADS: Final = tuple(struct.Struct(f"<BB{n}Q") for n in range(defaults.MAX_TENSOR_NDIM + 1))
_LEAD: Final = struct.Struct("<BB")


def inline_array(array: np.ndarray[Any, Any]) -> msgpack.ExtType:
    """``array`` as an inline extension; TypeError when it cannot be inlined (a dtype that does
    not travel, more dimensions than allowed): the caller then places it another way."""
    code = _CODE.get(array.dtype)
    if code is None or array.ndim > defaults.MAX_TENSOR_NDIM:
        raise TypeError(f"an array of {array.dtype} with {array.ndim} dimensions is not inlined")
    # tobytes() copies in C order whatever the layout: no contiguity to check.
    return msgpack.ExtType(
        INLINE_EXT, _HEADS[array.ndim].pack(code, array.ndim, *array.shape) + array.tobytes()
    )


def _unpack_inline(payload: bytes) -> np.ndarray[Any, Any]:
    if len(payload) < _LEAD.size:
        raise ProtocolError("inline array shorter than its head")
    code, ndim = _LEAD.unpack_from(payload)
    if code >= len(_BY_CODE) or ndim > defaults.MAX_TENSOR_NDIM:
        raise ProtocolError(f"inline array of dtype code {code} with {ndim} dimensions")
    head = _HEADS[ndim]
    if len(payload) < head.size:
        raise ProtocolError("inline array shorter than its head")
    shape = head.unpack_from(payload)[2:]
    dtype = _BY_CODE[code]
    count = 1
    for size in shape:
        if size > defaults.MAX_TENSOR_BYTES:
            raise ProtocolError(f"inline array of shape {list(shape)}")
        count *= size
    if count * dtype.itemsize != len(payload) - head.size:
        raise ProtocolError(
            f"inline array of shape {list(shape)} and dtype {dtype} needs "
            f"{count * dtype.itemsize} bytes, it carries {len(payload) - head.size}"
        )
    # A writable copy, as a frame's array would be to its user; small by construction.
    array: np.ndarray[Any, Any] = np.frombuffer(payload, dtype, count, head.size).reshape(shape)
    return array.copy()


class ExtHook:
    """msgpack's ``ext_hook`` for one message: tensor references (remembering the highest
    index, for the caller to check against the descriptors) and inline arrays (at most
    :data:`~mlsup.defaults.MAX_TENSORS` of them); any other extension is a ProtocolError."""

    __slots__ = ("highest", "inlined")

    def __init__(self) -> None:
        self.highest = -1
        self.inlined = 0

    def __call__(self, code: int, payload: bytes) -> Any:
        if code == INLINE_EXT:
            self.inlined += 1
            if self.inlined > defaults.MAX_TENSORS:
                raise ProtocolError(f"more than {defaults.MAX_TENSORS} inline arrays")
            return _unpack_inline(payload)
        if code != TENSOR_EXT or len(payload) != 4:
            raise ProtocolError(f"unknown extension type {code}")
        index = int.from_bytes(payload, "big")
        self.highest = max(self.highest, index)
        return TensorRef(index)
