"""Tensor descriptors of the wire format: what may cross (dtypes, segment names, places) and
the validation of every descriptor a peer sends. Pure: no sockets, no I/O.

Split from :mod:`mlsup.ipc.wire`, which re-exports these names.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from mlsup import defaults
from mlsup.errors import ProtocolError

__all__ = [
    "CUDA_FIELDS",
    "DTYPES",
    "SEGMENT_NAME",
    "TENSOR_EXT",
    "Place",
    "TensorDescriptor",
    "TensorRef",
    "tensor_descriptors",
]

Buffer: TypeAlias = bytes | bytearray | memoryview

#: msgpack extension code of a tensor reference (its data: the descriptor index, 4 bytes BE).
TENSOR_EXT: Final = 1

#: Names of shared-memory segments mlsup creates: ``mlsup-<pid>-<start time>-<random>``. A
#: descriptor naming anything else (a path, ``..``, another program's segment) is rejected.
SEGMENT_NAME: Final = re.compile(r"mlsup-(\d{1,10})-([0-9a-f]{1,16})-([0-9a-f]{16})")

#: dtypes that may cross the wire, with their item sizes. Object, void and datetime dtypes
#: never do: they can hide pointers or need pickle. ``bfloat16`` travels for torch tensors.
DTYPES: Final[dict[str, int]] = {
    "bool": 1,
    "int8": 1,
    "uint8": 1,
    "int16": 2,
    "uint16": 2,
    "int32": 4,
    "uint32": 4,
    "int64": 8,
    "uint64": 8,
    "float16": 2,
    "bfloat16": 2,
    "float32": 4,
    "float64": 8,
    "complex64": 8,
    "complex128": 16,
}


class Place(str, enum.Enum):
    """Where a tensor's bytes travel."""

    FRAME = "frame"  #: a frame after the header (small tensors)
    SHM = "shm"  #: a block of a pooled POSIX shared-memory segment (large tensors)
    CUDA = "cuda"  #: a torch CUDA tensor, shared by CUDA IPC handle (never copied to the host)


@dataclass(frozen=True, slots=True)
class TensorDescriptor:
    """Where one tensor's bytes are and how to view them.

    ``frame`` is the index among the buffer frames (place FRAME); ``segment`` and ``offset``
    locate the bytes in shared memory (place SHM); ``cuda`` holds the CUDA IPC handle of the
    tensor's storage and its layout (place CUDA, see :data:`CUDA_FIELDS`). ``torch`` asks the
    receiver for a torch tensor rather than a numpy array.
    """

    dtype: str
    shape: tuple[int, ...]
    place: Place
    nbytes: int
    frame: int = -1
    segment: str = ""
    offset: int = 0
    torch: bool = False
    cuda: Mapping[str, Any] | None = None

    def to_wire(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "dtype": self.dtype,
            "shape": list(self.shape),
            "place": self.place.value,
            "nbytes": self.nbytes,
        }
        if self.place is Place.FRAME:
            data["frame"] = self.frame
        elif self.place is Place.SHM:
            data["segment"] = self.segment
            data["offset"] = self.offset
        else:
            data["cuda"] = dict(self.cuda or {})
        if self.torch:
            data["torch"] = True
        return data


@dataclass(frozen=True, slots=True)
class TensorRef:
    """Placeholder left in decoded arguments where a tensor goes (index into ``tensors``)."""

    index: int


def tensor_descriptors(raw_descriptors: Any, buffers: list[Buffer]) -> list[TensorDescriptor]:
    if type(raw_descriptors) is not list:
        raise ProtocolError("tensor descriptors must be a list")
    if len(raw_descriptors) > defaults.MAX_TENSORS:
        raise ProtocolError(f"{len(raw_descriptors)} tensors exceed {defaults.MAX_TENSORS}")
    tensors = [_descriptor(raw, i, len(buffers)) for i, raw in enumerate(raw_descriptors)]
    for tensor in tensors:
        if tensor.place is Place.FRAME and len(buffers[tensor.frame]) != tensor.nbytes:
            raise ProtocolError(
                f"frame {tensor.frame} holds {len(buffers[tensor.frame])} bytes, "
                f"its descriptor says {tensor.nbytes}"
            )
    return tensors


_PLACES: Final = {place.value: place for place in Place}
_DESCRIPTOR_KEYS: Final = {
    Place.FRAME: frozenset({"dtype", "shape", "place", "nbytes", "frame", "torch"}),
    Place.SHM: frozenset({"dtype", "shape", "place", "nbytes", "segment", "offset", "torch"}),
    Place.CUDA: frozenset({"dtype", "shape", "place", "nbytes", "cuda", "torch"}),
}

#: The fields of a CUDA IPC descriptor (those of torch's ``rebuild_cuda_tensor``), by type.
#: ``bytes`` fields are opaque driver handles, bounded in size.
CUDA_FIELDS: Final[dict[str, type]] = {
    "stride": list,
    "tensor_offset": int,
    "device": int,
    "handle": bytes,
    "storage_size_bytes": int,
    "storage_offset_bytes": int,
    "ref_counter_handle": bytes,
    "ref_counter_offset": int,
    "event_handle": bytes,
    "event_sync_required": bool,
}
_MAX_HANDLE_BYTES: Final = 256


def _cuda_fields(raw: Any, ndim: int, index: int) -> dict[str, Any]:
    if type(raw) is not dict or set(raw) != set(CUDA_FIELDS):
        raise ProtocolError(
            f"tensor {index}: a CUDA descriptor needs exactly {sorted(CUDA_FIELDS)}"
        )
    for key, kind in CUDA_FIELDS.items():
        value = raw[key]
        if type(value) is not kind or (isinstance(value, int) and value < 0):
            raise ProtocolError(f"tensor {index}: CUDA field {key} must be a {kind.__name__}")
        if isinstance(value, bytes) and len(value) > _MAX_HANDLE_BYTES:
            raise ProtocolError(f"tensor {index}: CUDA handle {key} is too long")
    stride = raw["stride"]
    if len(stride) != ndim or not all(type(s) is int and s >= 0 for s in stride):
        raise ProtocolError(f"tensor {index}: CUDA stride must have one size per dimension")
    return dict(raw)


def _int(raw: dict[str, Any], key: str, index: int) -> int:
    value = raw.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError(f"tensor {index}: {key} must be a non-negative integer, not {value!r}")
    return value


def _descriptor(raw: Any, index: int, nbuffers: int) -> TensorDescriptor:
    if not isinstance(raw, dict):
        raise ProtocolError(f"tensor {index}: descriptor is not a map")
    place = _PLACES.get(raw.get("place"))  # type: ignore[arg-type]
    if place is None:
        raise ProtocolError(f"tensor {index}: unknown place {raw.get('place')!r}")
    unknown = raw.keys() - _DESCRIPTOR_KEYS[place]
    if unknown:
        raise ProtocolError(
            f"tensor {index}: unknown descriptor fields {sorted(map(str, unknown))}"
        )
    dtype = raw.get("dtype")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ProtocolError(f"tensor {index}: dtype {dtype!r} is not allowed")
    shape = raw.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) > defaults.MAX_TENSOR_NDIM
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise ProtocolError(f"tensor {index}: shape {shape!r} is not a list of sizes")
    nbytes = _int(raw, "nbytes", index)
    expected = math.prod(shape) * DTYPES[dtype]
    if expected != nbytes:
        raise ProtocolError(
            f"tensor {index}: shape {shape} of {dtype} needs {expected} bytes, "
            f"descriptor says {nbytes}"
        )
    if nbytes > defaults.MAX_TENSOR_BYTES:
        raise ProtocolError(f"tensor {index}: {nbytes} bytes exceed {defaults.MAX_TENSOR_BYTES}")
    torch = raw.get("torch", False)
    if not isinstance(torch, bool):
        raise ProtocolError(f"tensor {index}: torch flag must be a boolean")
    if place is Place.FRAME:
        frame = _int(raw, "frame", index)
        if frame >= nbuffers:
            raise ProtocolError(f"tensor {index}: frame {frame} but only {nbuffers} buffer frames")
        return TensorDescriptor(dtype, tuple(shape), place, nbytes, frame=frame, torch=torch)
    if place is Place.CUDA:
        cuda = _cuda_fields(raw.get("cuda"), len(shape), index)
        return TensorDescriptor(dtype, tuple(shape), place, nbytes, torch=True, cuda=cuda)
    segment = raw.get("segment")
    if not isinstance(segment, str) or not SEGMENT_NAME.fullmatch(segment):
        raise ProtocolError(f"tensor {index}: foreign shared-memory segment name {segment!r}")
    offset = _int(raw, "offset", index)
    return TensorDescriptor(
        dtype, tuple(shape), place, nbytes, segment=segment, offset=offset, torch=torch
    )
