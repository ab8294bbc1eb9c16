"""What the torch-based loaders (transformers, diffusers) share: device, dtype, sizes, seeds."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlsup.defaults import TORCH_ACTIVATION_FACTOR, TORCH_CUDA_OVERHEAD_MB
from mlsup.errors import ConfigError
from mlsup.kit.loaders.base import import_runtime

__all__ = [
    "estimate_torch_mb",
    "resolve_device",
    "resolve_dtype",
    "safetensors_bytes",
    "seeded",
]

# Bytes per element of the dtypes safetensors headers name.
_DTYPE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2}
_DTYPE_BYTES |= {"I16": 2, "U16": 2, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
_TORCH_DTYPES = {"float32": 4, "float16": 2, "bfloat16": 2}


def resolve_device(device: str, torch: Any) -> str:
    """``"auto"``: ``cuda`` when torch sees a GPU, else ``cpu``; anything else as given."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str, torch: Any) -> Any:
    """``"auto"``: float16 on CUDA (half the VRAM), float32 on the CPU; else a torch dtype name."""
    name = ("float16" if device.startswith("cuda") else "float32") if dtype == "auto" else dtype
    if name not in _TORCH_DTYPES:
        raise ConfigError(
            f"dtype {dtype!r} is not one of auto, {', '.join(_TORCH_DTYPES)}", field="dtype"
        )
    return getattr(torch, name)


def safetensors_bytes(path: Path, *, dtype: str = "auto") -> int:
    """Bytes of the weights in the ``*.safetensors`` files under ``path`` (recursively).

    Read from the files' JSON headers only. With ``dtype`` float16/bfloat16/float32, floating
    tensors are counted at that width (the loader converts them); ``auto`` keeps stored widths.
    Without safetensors files, the size of ``*.bin`` / ``*.pt`` files is used.
    """
    files = sorted(path.rglob("*.safetensors")) if path.is_dir() else [path]
    total = 0
    for file in files:
        for info in _safetensors_header(file).values():
            stored = _DTYPE_BYTES.get(info["dtype"], 4)
            width = (
                _TORCH_DTYPES.get(dtype, stored)
                if info["dtype"].startswith(("F", "BF"))
                else stored
            )
            count = 1
            for dim in info["shape"]:
                count *= int(dim)
            total += count * width
    if not files and path.is_dir():
        total = sum(p.stat().st_size for p in path.rglob("*") if p.suffix in (".bin", ".pt"))
    return total


def _safetensors_header(file: Path) -> dict[str, Any]:
    with file.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header: dict[str, Any] = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header


def estimate_torch_mb(path: Path, *, dtype: str) -> float:
    """Weights at ``dtype`` + activations (a fraction of them) + the CUDA context overhead.

    ``auto`` is sized as float16: that is what it becomes on a GPU, the only place VRAM is used.
    """
    sized = "float16" if dtype == "auto" else dtype
    weights_mb = safetensors_bytes(path, dtype=sized) / (1 << 20)
    return weights_mb * (1 + TORCH_ACTIVATION_FACTOR) + TORCH_CUDA_OVERHEAD_MB


@contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run with torch's RNG seeded, without disturbing the process's global RNG state."""
    if seed is None:
        yield
        return
    torch = import_runtime("torch", "hf")
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield
