"""Media at the gateway's edge: which audio container an upload is (by its magic bytes), and
images as PNG (zlib only: the gateway process needs no imaging library). Pure."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import numpy as np

from mlsup.errors import ConfigError

__all__ = ["AUDIO_FORMATS", "audio_format", "png"]

#: Containers the runtime's decoder (faster-whisper, through PyAV) is asked to read.
AUDIO_FORMATS = ("wav", "flac", "mp3")


def audio_format(head: bytes) -> str:
    """``wav``, ``flac`` or ``mp3`` from a file's first bytes; ConfigError otherwise."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    # An ID3 tag, or an MPEG audio frame header (11 sync bits, layer III).
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE6 == 0xE2):
        return "mp3"
    raise ConfigError(
        f"file: not a {', '.join(AUDIO_FORMATS)} file (by its first bytes)", field="file"
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def png(image: Any) -> bytes:
    """A uint8 RGB (H, W, 3) or grey (H, W) array as PNG bytes."""
    array = np.ascontiguousarray(image)
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise ValueError(f"expected a uint8 image, got {array.dtype} of shape {array.shape}")
    if array.ndim == 3 and array.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected 1, 3 or 4 channels, got {array.shape[2]}")
    height, width = array.shape[:2]
    channels = 1 if array.ndim == 2 else array.shape[2]
    color = {1: 0, 3: 2, 4: 6}[channels]
    rows = array.reshape(height, width * channels)
    raw = np.hstack([np.zeros((height, 1), dtype=np.uint8), rows]).tobytes()  # filter 0
    header = struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, 6))
        + _chunk(b"IEND", b"")
    )
