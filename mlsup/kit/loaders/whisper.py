"""Speech to text with faster-whisper (CTranslate2 Whisper models)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mlsup.defaults import TORCH_ACTIVATION_FACTOR
from mlsup.errors import ModelLoadError
from mlsup.kit.loaders.base import ModelLoader, backend_errors, file_size_mb, import_runtime

__all__ = ["SAMPLE_RATE", "WhisperLoader", "WhisperModel"]

#: Whisper's input: mono float32 audio at this rate.
SAMPLE_RATE = 16_000
# What a converted faster-whisper directory must hold; without tokenizer.json faster-whisper
# would try to download one.
_REQUIRED = ("model.bin", "config.json", "tokenizer.json")


class WhisperModel:
    """A loaded faster-whisper model.

    :meth:`transcribe` returns plain data: ``{"text": str, "language": str,
    "language_probability": float, "duration": float, "segments": [{"start": float,
    "end": float, "text": str}, ...]}``.
    """

    def __init__(self, model: Any, path: Path) -> None:
        self._model = model
        self.path = path

    def transcribe(self, audio: np.ndarray | str | Path, **options: Any) -> dict[str, Any]:
        """Transcribe float32 16 kHz mono samples, or an audio file's path.

        Options are faster-whisper's (``language``, ``beam_size``, ``temperature``,
        ``vad_filter``, ...). Decoding is deterministic by default (beam search, temperature 0).
        """
        source: Any
        if isinstance(audio, (str, Path)):
            source = str(audio)
        else:
            source = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
        options = {"temperature": 0.0, **options}
        with backend_errors(self.path):
            segments, info = self._model.transcribe(source, **options)
            rows: list[dict[str, Any]] = [
                {"start": float(s.start), "end": float(s.end), "text": str(s.text)}
                for s in segments  # a generator: decoding happens here
            ]
        return {
            "text": "".join(r["text"] for r in rows).strip(),
            "segments": rows,
            "language": str(info.language),
            "language_probability": float(info.language_probability),
            "duration": float(info.duration),
        }

    def close(self) -> None:
        """Drop the CTranslate2 model (its memory is freed with it)."""
        self._model = None


class WhisperLoader(ModelLoader):
    """Loads a faster-whisper (CTranslate2) model directory.

    Options: ``device`` (``auto``, ``cpu``, ``cuda``), ``compute_type`` (``default``, ``int8``,
    ``float16``...), ``cpu_threads``, ``num_workers``. Files are read locally only.
    """

    name = "whisper"
    extra = "whisper"

    def _estimate_mb(self, path: Path, options: Mapping[str, Any]) -> float:
        return file_size_mb([path / "model.bin"]) * (1 + TORCH_ACTIVATION_FACTOR)

    def _load(self, path: Path, options: Mapping[str, Any]) -> WhisperModel:
        missing = [name for name in _REQUIRED if not (path / name).is_file()]
        if missing:
            raise ModelLoadError(
                f"{path} is not a faster-whisper model directory: missing {', '.join(missing)}",
                path=str(path),
            )
        faster_whisper = import_runtime("faster_whisper", self.extra)
        kwargs = {"device": "auto", "compute_type": "default", **options}
        model = faster_whisper.WhisperModel(str(path), local_files_only=True, **kwargs)
        return WhisperModel(model, path)
