"""Tensors in and out of messages: numpy arrays and torch CPU tensors, by frame or shared memory.

Sending: an array of at least ``threshold`` bytes is copied once into a block lent by the
sender's :class:`~mlsup.ipc.shm.ShmPool`; smaller ones travel as frames (zero-copy from the
array's memory). Receiving: a shared-memory tensor becomes a zero-copy view of the sender's
block. Who may reuse a block when:

* request tensors (caller → server) are valid until the server replies; the caller then takes
  its blocks back. A handler that keeps an input beyond its call must copy it.
* reply tensors (server → caller) belong to the caller until every view of them is gone; a
  finalizer then queues the block's name, and the caller gives it back with its next message.

CUDA tensors travel by CUDA IPC handle (torch's storage sharing: the receiver maps the same
device memory, nothing is copied) when this process has CUDA; a receiver without CUDA gets a
ProtocolError. ``TensorCodec(cuda_ipc=False)`` copies them through host memory instead.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from mlsup import defaults
from mlsup.errors import ProtocolError
from mlsup.ipc.extensions import inline_array
from mlsup.ipc.shm import AttachCache, ShmPool
from mlsup.ipc.wire import (
    DTYPES,
    Message,
    Place,
    Placed,
    TensorDescriptor,
    TensorRef,
    encode,
    encode_plain,
)

__all__ = ["TensorCodec"]

_NUMPY_DTYPES = {name: np.dtype(name) for name in DTYPES if name != "bfloat16"}
_NUMPY_DTYPES["bfloat16"] = np.dtype("uint16")  # bfloat16 bytes, viewed back by torch
#: numpy dtype -> wire name, for the dtypes numpy arrays may travel as (native byte order).
_WIRE_NAMES = {np.dtype(name): name for name in DTYPES if name != "bfloat16"}


def _is_torch_tensor(obj: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


def _as_array(obj: Any) -> tuple[np.ndarray[Any, Any], str, bool]:
    """(contiguous array, wire dtype name, is torch) for a numpy array or torch tensor."""
    if isinstance(obj, np.ndarray):
        # Not np.ascontiguousarray: it turns 0-d arrays into 1-d ones.
        array = obj if obj.flags.c_contiguous else obj.copy(order="C")
        name = _WIRE_NAMES.get(array.dtype)
        if name is None:
            raise TypeError(f"arrays of dtype {array.dtype} cannot travel")
        return array, name, False
    if _is_torch_tensor(obj):
        import torch

        tensor = obj.detach()
        if tensor.device.type != "cpu":
            tensor = tensor.cpu()
        tensor = tensor.contiguous()
        if tensor.dtype == torch.bfloat16:
            return tensor.view(torch.int16).numpy().view(np.uint16), "bfloat16", True
        array = tensor.numpy()
        if array.dtype.name not in _NUMPY_DTYPES:
            raise TypeError(f"tensors of dtype {tensor.dtype} cannot travel")
        return array, array.dtype.name, True
    raise TypeError(f"cannot send an object of type {type(obj).__name__}")


class TensorCodec:
    """Encodes messages with tensors into frames and decodes them into arrays.

    ``pool`` lends the blocks this side sends (None: everything travels as frames);
    ``cache`` maps the blocks the other side sends; numpy arrays of at most ``inline`` bytes
    travel inside the header (:mod:`mlsup.ipc.extensions`; 0: never).
    """

    def __init__(
        self,
        pool: ShmPool | None,
        cache: AttachCache | None = None,
        *,
        threshold: int = defaults.SHM_THRESHOLD_BYTES,
        cuda_ipc: bool = True,
        inline: int = 0,
    ) -> None:
        self.pool = pool
        self.cache = cache if cache is not None else AttachCache()
        self.threshold = threshold
        self.cuda_ipc = cuda_ipc
        self.inline = inline
        self._inline_hook = _inline_hook(inline) if inline else None

    def encode(self, message: Message, use_shm: bool = True) -> tuple[list[Any], list[str]]:
        """Frames for message, and the names of the blocks it lent (to take back later)."""
        # An array alone (an embedding, say) is plain only when it is inlined: else skip the
        # failed attempt.
        hook = self._inline_hook
        if hook is not None or type(message.args) is not np.ndarray:
            plain = encode_plain(message, hook)
            if plain is not None:
                return [plain], []
        lent: list[str] = []
        pool = self.pool if use_shm else None

        def place(obj: Any, frame: int) -> Any:
            if isinstance(obj, np.generic):
                return obj.item()
            if self.cuda_ipc and _is_torch_tensor(obj) and obj.device.type == "cuda":
                return Placed(_cuda_descriptor(obj))
            array, dtype, torch = _as_array(obj)
            nbytes = array.nbytes
            shape = tuple(array.shape)
            if pool is not None and nbytes >= self.threshold:
                segment = pool.lend(nbytes)
                if segment is not None:
                    lent.append(segment.name)
                    target = np.ndarray(shape, dtype=array.dtype, buffer=segment.buffer)
                    np.copyto(target, array, casting="no")
                    descriptor = TensorDescriptor(
                        dtype, shape, Place.SHM, nbytes, segment=segment.name, torch=torch
                    )
                    return Placed(descriptor)
            descriptor = TensorDescriptor(
                dtype, shape, Place.FRAME, nbytes, frame=frame, torch=torch
            )
            return Placed(descriptor, array.reshape(-1).view(np.uint8).data if nbytes else b"")

        try:
            return encode(message, place), lent
        except BaseException:
            if self.pool is not None:
                for name in lent:
                    self.pool.give_back(name)
            raise

    def decode_args(
        self, message: Message, on_collected: Callable[[str], None] | None = None
    ) -> Any:
        """message.args with every tensor reference replaced by its array.

        With ``on_collected``, shared-memory tensors are borrowed: ``on_collected(name)`` runs
        once the last view of a block is garbage. Raises ProtocolError for a block that is
        missing, foreign or out of bounds.
        """
        if not message.tensors:
            return message.args
        arrays = [self._materialize(message, d, on_collected) for d in message.tensors]
        return _substitute(message.args, arrays)

    def _materialize(
        self,
        message: Message,
        descriptor: TensorDescriptor,
        on_collected: Callable[[str], None] | None,
    ) -> Any:
        if descriptor.place is Place.CUDA:
            return _rebuild_cuda(descriptor)
        dtype = _NUMPY_DTYPES[descriptor.dtype]
        if descriptor.place is Place.FRAME:
            raw = np.frombuffer(message.buffers[descriptor.frame], dtype=np.uint8)
            if descriptor.torch:
                raw = raw.copy()  # torch wants writable memory; frames are small
        else:
            view = self.cache.view(descriptor.segment, descriptor.offset, descriptor.nbytes)
            raw = np.frombuffer(view, dtype=np.uint8)
            if on_collected is not None:
                # Derived views keep ``raw`` alive (numpy stops collapsing bases at the
                # memoryview), so this runs only when the caller holds no view at all.
                weakref.finalize(raw, on_collected, descriptor.segment)
        array = raw.view(dtype).reshape(descriptor.shape)
        if not descriptor.torch:
            return array
        import torch

        tensor = torch.from_numpy(array)
        if descriptor.dtype == "bfloat16":
            tensor = tensor.view(torch.bfloat16)
        return tensor


def _inline_hook(limit: int) -> Callable[[Any], Any]:
    """msgpack's ``default`` for the plain path of a codec that inlines numpy arrays of at most
    ``limit`` bytes (and numpy scalars as Python values); TypeError for anything else."""
    ndarray, generic = np.ndarray, np.generic

    def hook(obj: Any) -> Any:
        if type(obj) is ndarray and obj.nbytes <= limit:
            return inline_array(obj)
        if isinstance(obj, generic):
            return obj.item()
        raise TypeError(f"cannot inline an object of type {type(obj).__name__}")

    return hook


def _cuda_descriptor(tensor: Any) -> TensorDescriptor:
    """Describe a CUDA tensor by the IPC handle of its storage (torch's own reduction)."""
    from torch.multiprocessing.reductions import reduce_tensor

    tensor = tensor.detach()
    _, fields = reduce_tensor(tensor)
    (_, size, stride, tensor_offset, _, dtype, device, handle, storage_size, storage_offset,
     _, ref_handle, ref_offset, event_handle, event_sync) = fields  # fmt: skip
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise TypeError(f"CUDA tensors of dtype {dtype} cannot travel")
    cuda = {
        "stride": list(stride),
        "tensor_offset": int(tensor_offset),
        "device": int(device),
        "handle": bytes(handle),
        "storage_size_bytes": int(storage_size),
        "storage_offset_bytes": int(storage_offset),
        "ref_counter_handle": bytes(ref_handle),
        "ref_counter_offset": int(ref_offset),
        "event_handle": bytes(event_handle or b""),
        "event_sync_required": bool(event_sync),
    }
    nbytes = tensor.numel() * tensor.element_size()
    return TensorDescriptor(name, tuple(size), Place.CUDA, nbytes, torch=True, cuda=cuda)


def _rebuild_cuda(descriptor: TensorDescriptor) -> Any:
    """Open a CUDA tensor another process shared (zero-copy, same device memory)."""
    try:
        import torch
        from torch.multiprocessing.reductions import rebuild_cuda_tensor
    except ImportError:
        raise ProtocolError("a CUDA tensor arrived, but torch is not installed here") from None
    if not torch.cuda.is_available():
        raise ProtocolError("a CUDA tensor arrived, but CUDA is not available here")
    cuda = descriptor.cuda or {}
    return rebuild_cuda_tensor(
        torch.Tensor,
        torch.Size(descriptor.shape),
        tuple(cuda["stride"]),
        cuda["tensor_offset"],
        torch.UntypedStorage,
        getattr(torch, descriptor.dtype),
        cuda["device"],
        cuda["handle"],
        cuda["storage_size_bytes"],
        cuda["storage_offset_bytes"],
        False,
        cuda["ref_counter_handle"],
        cuda["ref_counter_offset"],
        cuda["event_handle"] or None,
        cuda["event_sync_required"],
    )


def _substitute(value: Any, arrays: list[Any], depth: int = 0) -> Any:
    if depth > defaults.MAX_ARG_DEPTH:
        raise ProtocolError(f"arguments with tensors nested deeper than {defaults.MAX_ARG_DEPTH}")
    if isinstance(value, TensorRef):
        return arrays[value.index]
    if isinstance(value, dict):
        return {key: _substitute(item, arrays, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [_substitute(item, arrays, depth + 1) for item in value]
    return value
