"""Read a GGUF file's metadata (the key/value header) without any runtime, and size its memory.

GGUF layout (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md): magic ``GGUF``,
version (u32), tensor count and key/value count (u64; u32 in version 1), then the key/value
pairs. Only the header is read; the tensors (the bulk of the file) are never touched, so reading
is fast even for a multi-GB file. Long arrays (the tokenizer's vocabulary) are skipped and
recorded by their length.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from mlsup.defaults import GGUF_COMPUTE_OVERHEAD_MB, GGUF_KV_BYTES_PER_VALUE, GGUF_UBATCH
from mlsup.errors import ModelLoadError

__all__ = ["GGUFMetadata", "estimate_gguf_mb", "read_gguf_metadata"]

_MAGIC = b"GGUF"
# value type id -> struct format of one scalar; 8 (string) and 9 (array) are handled apart.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q"}
_SCALARS |= {11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
# Arrays longer than this are recorded as their length only (vocabularies, merges, scores).
_MAX_KEPT_ARRAY = 4096


@dataclass(frozen=True)
class GGUFMetadata:
    """The facts of a GGUF file that size its memory."""

    path: Path
    architecture: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim_k: int
    head_dim_v: int
    n_ctx_train: int
    n_vocab: int
    file_mb: float
    values: dict[str, Any]


def read_gguf_metadata(path: str | Path) -> GGUFMetadata:
    """Parse the header of a GGUF file; a file that is not GGUF raises ModelLoadError."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            values = _read_header(f, path)
        size = path.stat().st_size
    except (OSError, struct.error, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"cannot read GGUF header of {path}: {exc}", path=str(path)) from exc
    return _metadata(path, values, size)


def _read_header(f: IO[bytes], path: Path) -> dict[str, Any]:
    if f.read(4) != _MAGIC:
        raise ModelLoadError(f"{path} is not a GGUF file (bad magic)", path=str(path))
    (version,) = struct.unpack("<I", f.read(4))
    count_fmt = "<I" if version == 1 else "<Q"
    _tensors, n_kv = (struct.unpack(count_fmt, f.read(struct.calcsize(count_fmt)))[0] for _ in "tk")
    values: dict[str, Any] = {}
    for _ in range(n_kv):
        key = _read_string(f)
        (vtype,) = struct.unpack("<I", f.read(4))
        values[key] = _read_value(f, vtype)
    return values


def _read_string(f: IO[bytes]) -> str:
    (n,) = struct.unpack("<Q", f.read(8))
    return f.read(n).decode("utf-8")


def _read_value(f: IO[bytes], vtype: int) -> Any:
    if vtype == _STRING:
        return _read_string(f)
    if vtype == _ARRAY:
        (itype,) = struct.unpack("<I", f.read(4))
        (n,) = struct.unpack("<Q", f.read(8))
        if itype in _SCALARS and n > _MAX_KEPT_ARRAY:
            f.seek(n * struct.calcsize(_SCALARS[itype]), 1)
            return n
        items = [_read_value(f, itype) for _ in range(n)]
        return items if n <= _MAX_KEPT_ARRAY else n
    fmt = _SCALARS.get(vtype)
    if fmt is None:
        raise struct.error(f"unknown GGUF value type {vtype}")
    return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]


def _metadata(path: Path, values: dict[str, Any], size: int) -> GGUFMetadata:
    arch = values.get("general.architecture")
    if not isinstance(arch, str):
        raise ModelLoadError(f"{path} has no general.architecture", path=str(path))

    def number(key: str, default: int | None = None) -> int:
        value = values.get(f"{arch}.{key}", default)
        if isinstance(value, list):  # per-layer values (some archs): size for the largest
            value = max(value, default=0)
        if not isinstance(value, (int, float)):
            raise ModelLoadError(f"{path} lacks {arch}.{key}", path=str(path))
        return int(value)

    n_embd = number("embedding_length")
    n_head = number("attention.head_count")
    vocab = values.get("tokenizer.ggml.tokens")
    n_vocab = number("vocab_size", vocab if isinstance(vocab, int) else len(vocab or []))
    return GGUFMetadata(
        path=path,
        architecture=arch,
        n_layer=number("block_count"),
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=number("attention.head_count_kv", n_head),
        head_dim_k=number("attention.key_length", n_embd // max(n_head, 1)),
        head_dim_v=number("attention.value_length", n_embd // max(n_head, 1)),
        n_ctx_train=number("context_length", 0),
        n_vocab=n_vocab,
        file_mb=size / (1 << 20),
        values=values,
    )


def estimate_gguf_mb(meta: GGUFMetadata, *, n_ctx: int, n_gpu_layers: int = -1) -> float:
    """VRAM of a GGUF model with ``n_gpu_layers`` offloaded (-1: all), in MB.

    weights (the file's size, pro rata of offloaded layers) + KV cache for ``n_ctx`` tokens
    (``n_layer * n_ctx * n_head_kv * (head_dim_k + head_dim_v)`` f16 values) + compute buffers
    (logits and activations of one micro-batch, plus a fixed overhead). Nothing offloaded: 0.
    """
    layers = meta.n_layer if n_gpu_layers < 0 else min(n_gpu_layers, meta.n_layer)
    if layers == 0:
        return 0.0
    share = layers / max(meta.n_layer, 1)
    kv_per_layer = n_ctx * meta.n_head_kv * (meta.head_dim_k + meta.head_dim_v)
    kv_mb = meta.n_layer * kv_per_layer * GGUF_KV_BYTES_PER_VALUE / (1 << 20)
    compute_mb = GGUF_UBATCH * (meta.n_vocab + 4 * meta.n_embd) * 4 / (1 << 20)
    return math.ceil((meta.file_mb + kv_mb) * share + compute_mb + GGUF_COMPUTE_OVERHEAD_MB)
