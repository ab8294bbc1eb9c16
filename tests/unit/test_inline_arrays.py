"""Small arrays inside the header (mlsup.ipc.extensions): round trips, the limit, and rejection
of every malformed inline payload."""

from __future__ import annotations

import contextlib
import struct
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mlsup import defaults
from mlsup.errors import ProtocolError
from mlsup.ipc.extensions import INLINE_EXT, inline_array
from mlsup.ipc.tensors import TensorCodec
from mlsup.ipc.wire import Kind, Message, decode

LIMIT = 4096
inlining = TensorCodec(pool=None, inline=LIMIT)

dtypes = st.sampled_from(
    ["bool", "int8", "uint8", "int16", "uint16", "int32", "uint64", "float16", "float32",
     "float64", "complex64", "complex128"]
)  # fmt: skip
small_arrays = dtypes.flatmap(  # at most 125 items of 16 bytes: under LIMIT
    lambda d: hnp.arrays(d, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
)


def reply_frames(args: Any) -> list[bytes]:
    frames, lent = inlining.encode(Message(Kind.REPLY, 3, args=args))
    assert lent == []
    return [bytes(frame) for frame in frames]


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(arrays=st.lists(small_arrays, min_size=1, max_size=4))
def test_small_arrays_travel_inside_the_header(arrays: list[np.ndarray[Any, Any]]) -> None:
    frames = reply_frames({"arrays": arrays, "first": arrays[0]})
    assert len(frames) == 1  # no buffer frame
    message = decode(frames)
    assert message.tensors == []  # no descriptor either
    received = inlining.decode_args(message)
    for sent, got in zip(
        [*arrays, arrays[0]], [*received["arrays"], received["first"]], strict=True
    ):
        assert got.dtype == sent.dtype and got.shape == sent.shape
        assert np.array_equal(got, sent, equal_nan=sent.dtype.kind in "fc")
        assert got.flags.writeable  # as an array from a frame is


def test_a_strided_array_is_inlined_in_c_order() -> None:
    array = np.arange(24, dtype=np.int32).reshape(4, 6)[:, ::2]
    received = decode(reply_frames(array)).args
    assert np.array_equal(received, array)


def test_arrays_over_the_limit_travel_as_frames_with_descriptors() -> None:
    big = np.zeros(LIMIT // 4 + 1, dtype=np.float32)
    assert len(reply_frames(big)) == 2
    # One array over the limit sends the message the descriptor way, every array by frame.
    frames = reply_frames({"big": big, "small": np.ones(3)})
    message = decode(frames)
    assert len(frames) == 3 and len(message.tensors) == 2
    args = inlining.decode_args(message)
    assert np.array_equal(args["big"], big) and np.array_equal(args["small"], np.ones(3))


def test_what_cannot_be_inlined_takes_the_descriptor_path() -> None:
    swapped = np.arange(3, dtype=">f4")
    with pytest.raises(ProtocolError, match="cannot travel"):
        inlining.encode(Message(Kind.REPLY, 1, args=swapped))  # as without inlining
    with pytest.raises(ProtocolError, match="cannot travel"):
        inlining.encode(Message(Kind.REPLY, 1, args=np.array([object()])))
    scalars = decode(reply_frames([np.float32(1.5), np.int64(3)])).args
    assert scalars == [1.5, 3]


def test_a_codec_inlines_nothing_unless_asked() -> None:
    frames, _ = TensorCodec(pool=None).encode(Message(Kind.REPLY, 1, args=np.ones(3)))
    assert len(frames) == 2


def payload(code: int, shape: list[int], data: bytes) -> bytes:
    return struct.pack(f"<BB{len(shape)}Q", code, len(shape), *shape) + data


FLOAT32 = inline_array(np.zeros(1, np.float32)).data[0]  # its dtype code, the payload's first byte

HOSTILE = {
    "empty payload": b"",
    "one byte": b"\x0b",
    "unknown dtype code": payload(200, [1], b"\0" * 4),
    "too many dims": payload(FLOAT32, [1] * (defaults.MAX_TENSOR_NDIM + 1), b"\0" * 4),
    "sizes cut short": payload(FLOAT32, [2, 2], b"")[:10],
    "too few bytes": payload(FLOAT32, [6], b"\0" * 20),
    "too many bytes": payload(FLOAT32, [6], b"\0" * 28),
    "huge sizes": payload(FLOAT32, [2**63, 2**63], b""),
    "huge size with a zero": payload(FLOAT32, [0, 2**64 - 1], b""),
}


def header(args: Any) -> bytes:
    return msgpack.packb([1, int(Kind.REPLY), 3, "", None, None, None, args])


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_inline_payloads_raise_protocol_error(case: str) -> None:
    with pytest.raises(ProtocolError):
        decode([header({"x": msgpack.ExtType(INLINE_EXT, HOSTILE[case])})])


def test_too_many_inline_arrays_are_refused() -> None:
    one = msgpack.ExtType(INLINE_EXT, payload(FLOAT32, [0], b""))
    decode([header([one] * defaults.MAX_TENSORS)])
    with pytest.raises(ProtocolError, match="inline arrays"):
        decode([header([one] * (defaults.MAX_TENSORS + 1))])


@given(data=st.data())
def test_mutated_inline_headers_decode_or_raise_protocol_error(data: st.DataObject) -> None:
    frame = bytearray(reply_frames({"x": np.arange(6, dtype=np.float32)})[0])
    for _ in range(data.draw(st.integers(1, 4))):
        frame[data.draw(st.integers(0, len(frame) - 1))] ^= data.draw(st.integers(1, 255))
    with contextlib.suppress(ProtocolError):
        inlining.decode_args(decode([bytes(frame)]))
