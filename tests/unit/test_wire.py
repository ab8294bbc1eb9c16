"""The wire format on its own: round trips, and rejection of anything malformed."""

from __future__ import annotations

import pickle
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mlsup import defaults
from mlsup.errors import ProtocolError
from mlsup.ipc.tensors import TensorCodec
from mlsup.ipc.wire import Kind, Message, TensorRef, decode, encode, peek_request_id

codec = TensorCodec(pool=None)  # frames only: pure, no shared memory

plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
dtypes = st.sampled_from(
    [
        "bool",
        "int8",
        "uint8",
        "int16",
        "int32",
        "int64",
        "uint64",
        "float16",
        "float32",
        "float64",
        "complex64",
    ]
)
arrays = dtypes.flatmap(
    lambda d: hnp.arrays(d, hnp.array_shapes(min_dims=0, max_dims=3, max_side=5))
)


def round_trip(message: Message) -> tuple[Message, Any]:
    frames, lent = codec.encode(message)
    assert lent == []
    received = decode([bytes(frame) for frame in frames])
    return received, codec.decode_args(received)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):
        return (
            isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
        )
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
    return bool(a == b)


@given(args=plain, rid=st.integers(0, 2**63 - 1), op=st.text(min_size=1, max_size=30))
def test_plain_arguments_round_trip(args: Any, rid: int, op: str) -> None:
    received, decoded = round_trip(Message(Kind.REQUEST, rid, op=op, args=args))
    assert (received.kind, received.id, received.op) == (Kind.REQUEST, rid, op)
    assert same(args, decoded)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(tensors=st.lists(arrays, max_size=4), extra=plain)
def test_tensors_anywhere_in_the_arguments_round_trip(tensors: list[Any], extra: Any) -> None:
    args = {"tensors": tensors, "nested": {"first": tensors[:1]}, "extra": extra}
    received, decoded = round_trip(Message(Kind.REPLY, 1, args=args))
    assert len(received.tensors) == 2 * len(tensors[:1]) + len(tensors) - len(tensors[:1])
    assert same(args, decoded)


def test_numpy_scalars_travel_as_python_values() -> None:
    _, decoded = round_trip(Message(Kind.REPLY, 1, args=[np.float32(1.5), np.int64(3)]))
    assert decoded == [1.5, 3]


def valid_frames() -> list[bytes]:
    frames, _ = codec.encode(
        Message(Kind.REQUEST, 7, op="embed", args={"x": np.arange(6, dtype=np.float32)})
    )
    return [bytes(frame) for frame in frames]


@given(data=st.data())
def test_mutated_frames_decode_or_raise_protocol_error(data: st.DataObject) -> None:
    frames = valid_frames()
    header = bytearray(frames[0])
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "truncate", "extend"]))
        if action == "flip" and header:
            header[data.draw(st.integers(0, len(header) - 1))] ^= data.draw(st.integers(1, 255))
        elif action == "truncate":
            del header[data.draw(st.integers(0, len(header))) :]
        else:
            header += data.draw(st.binary(min_size=1, max_size=8))
    frames[0] = bytes(header)
    try:
        message = decode(frames)
        # Whatever survives decoding must also materialize, or be refused the same way.
        codec.decode_args(message)
    except ProtocolError:
        pass


FIELDS = ["v", "k", "id", "op", "r", "e", "t", "a"]


def header_of(**changes: Any) -> list[Any]:
    """The valid header, as its eight fields, with some replaced by name."""
    header = msgpack.unpackb(valid_frames()[0], ext_hook=msgpack.ExtType)
    for name, value in changes.items():
        header[FIELDS.index(name)] = value
    return header


def descriptor(**changes: Any) -> dict[str, Any]:
    return {**header_of()[6][0], **changes}


def pack(header: list[Any]) -> bytes:
    return msgpack.packb(header)


DEEP: Any = []
for _ in range(40):
    DEEP = [DEEP]

FRAME = np.arange(6, dtype=np.float32).tobytes()
HOSTILE = {
    "empty message": [],
    "pickle payload": [pickle.dumps({"op": "embed"}), FRAME],
    "garbage": [b"\xc1\xff\x00garbage", FRAME],
    "header is a map": [msgpack.packb({"v": 1, "k": 1}), FRAME],
    "header too short": [pack(header_of()[:7]), FRAME],
    "version": [pack(header_of(v=99)), FRAME],
    "kind": [pack(header_of(k=42)), FRAME],
    "unhashable kind": [pack(header_of(k=[1])), FRAME],
    "negative id": [pack(header_of(id=-1)), FRAME],
    "boolean id": [pack(header_of(id=True)), FRAME],
    "request without op": [pack(header_of(op="")), FRAME],
    "op not a string": [pack(header_of(op=3)), FRAME],
    "wrong nbytes": [pack(header_of(t=[descriptor(nbytes=20)])), FRAME],
    "truncated frame": [pack(header_of()), FRAME[:-3]],
    "missing frame": [pack(header_of())],
    "frame index": [pack(header_of(t=[descriptor(frame=5)])), FRAME],
    "object dtype": [pack(header_of(t=[descriptor(dtype="object")])), FRAME],
    "big-endian dtype": [pack(header_of(t=[descriptor(dtype=">f4")])), FRAME],
    "shape overflow": [pack(header_of(t=[descriptor(shape=[2**62, 2**62], nbytes=2**60)])), FRAME],
    "negative shape": [pack(header_of(t=[descriptor(shape=[-6], nbytes=24)])), FRAME],
    "too many dims": [pack(header_of(t=[descriptor(shape=[1] * 40 + [6])])), FRAME],
    "unknown descriptor field": [pack(header_of(t=[descriptor(code="x")])), FRAME],
    "foreign segment": [
        pack(header_of(t=[descriptor(place="shm", segment="PostgreSQL.1", offset=0)]))
    ],
    "path segment": [
        pack(header_of(t=[descriptor(place="shm", segment="../../etc/passwd", offset=0)]))
    ],
    "slash segment": [
        pack(header_of(t=[descriptor(place="shm", segment="/mlsup-1-a-0", offset=0)]))
    ],
    "unknown place": [pack(header_of(t=[descriptor(place="gpu")])), FRAME],
    "descriptors not a list": [pack(header_of(t={"0": 1})), FRAME],
    "ref without descriptor": [pack(header_of(t=None)), FRAME],
    "unknown ext": [pack(header_of(a=msgpack.ExtType(9, b"x")))],
    "foreign release": [pack(header_of(r=["/etc/passwd"])), FRAME],
    "releases not a list": [pack(header_of(r="mlsup-1-1-0123456789abcdef")), FRAME],
    "error without map": [pack(header_of(k=int(Kind.ERROR), e="x")), FRAME],
    "too many frames": [pack(header_of()), *[b""] * (defaults.MAX_FRAMES + 1)],
    "huge header": [b"\x00" * (defaults.MAX_HEADER_BYTES + 1)],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_frames_raise_protocol_error(case: str) -> None:
    with pytest.raises(ProtocolError):
        decode(HOSTILE[case])


def test_request_id_is_found_for_error_replies_when_possible() -> None:
    assert peek_request_id(pack(header_of(v=99))) == 7
    assert peek_request_id(b"\xc1garbage") == 0
    assert peek_request_id(b"\x92\x01") == 0  # cut short before the id
    assert peek_request_id(pack(header_of(id=-3))) == 0


def test_peeking_reads_only_the_leading_fields() -> None:
    # A header of 8 MiB of arguments: unpacking it whole would build millions of objects.
    big = pack([1, int(Kind.REQUEST), 31337, "embed", None, None, None, None])[:-1]
    header = big + b"\xdd" + (8 << 20).to_bytes(4, "big") + bytes(8 << 20)
    assert peek_request_id(header) == 31337
    assert peek_request_id(memoryview(header)) == 31337
    with pytest.raises(ProtocolError, match="exceeds 1024"):
        decode([header], max_header_bytes=1024)


def test_arguments_keep_tensor_references_until_materialized() -> None:
    received = decode(valid_frames())
    assert received.args == {"x": TensorRef(0)}
    assert received.tensors[0].shape == (6,) and received.tensors[0].dtype == "float32"


def test_tensors_nested_too_deep_are_refused_when_materialized() -> None:
    nested = [msgpack.ExtType(1, b"\0\0\0\0")]
    for _ in range(40):
        nested = [nested]
    message = decode([pack(header_of(a=nested)), FRAME])
    with pytest.raises(ProtocolError, match="nested deeper"):
        codec.decode_args(message)


def test_unsendable_objects_are_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="cannot travel"):
        codec.encode(Message(Kind.REQUEST, 1, op="x", args={"f": object()}))
    with pytest.raises(ProtocolError, match="cannot travel"):
        codec.encode(Message(Kind.REQUEST, 1, op="x", args=np.array([object()])))


def cuda_descriptor(**changes: Any) -> dict[str, Any]:
    cuda = {
        "stride": [1], "tensor_offset": 0, "device": 0, "handle": b"h" * 64,
        "storage_size_bytes": 24, "storage_offset_bytes": 0, "ref_counter_handle": b"r" * 16,
        "ref_counter_offset": 0, "event_handle": b"e" * 64, "event_sync_required": True,
    }  # fmt: skip
    cuda.update(changes)
    return {"dtype": "float32", "shape": [6], "place": "cuda", "nbytes": 24, "cuda": cuda}


def test_cuda_descriptors_are_validated_without_cuda() -> None:
    message = decode([pack(header_of(t=[cuda_descriptor()]))])
    (tensor,) = message.tensors
    assert tensor.place.value == "cuda" and tensor.torch and tensor.cuda is not None
    assert tensor.cuda["handle"] == b"h" * 64


@pytest.mark.parametrize(
    "changes",
    [
        {"handle": "not bytes"},
        {"handle": b"x" * 1000},
        {"stride": [1, 1]},
        {"device": -1},
        {"event_sync_required": 1},
        {"extra": 1},
    ],
)
def test_hostile_cuda_descriptors_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        decode([pack(header_of(t=[cuda_descriptor(**changes)]))])


def test_a_cuda_tensor_without_cuda_here_is_a_protocol_error() -> None:
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    message = decode([pack(header_of(t=[cuda_descriptor()]))])
    with pytest.raises(ProtocolError, match="CUDA is not available"):
        codec.decode_args(message)


@given(args=plain, rid=st.integers(0, 2**63 - 1), op=st.text(min_size=1, max_size=30))
def test_the_plain_fast_path_makes_the_same_bytes(args: Any, rid: int, op: str) -> None:
    from mlsup.ipc.wire import encode_plain

    message = Message(Kind.REQUEST, rid, op=op, args=args)
    assert encode_plain(message) == bytes(encode(message)[0])


def test_the_plain_fast_path_declines_tensors() -> None:
    from mlsup.ipc.wire import encode_plain

    assert encode_plain(Message(Kind.REPLY, 1, args={"x": np.zeros(3)})) is None
