"""WhisperLoader with a tiny random Whisper converted by CTranslate2's converter."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from mlsup.errors import ModelLoadError
from mlsup.kit.loaders import WhisperLoader
from mlsup.kit.loaders.whisper import SAMPLE_RATE

# Bounds the decoding of a random model (which never says "end of text" on its own).
FAST = {"max_new_tokens": 8, "beam_size": 1}


def tone(seconds: float = 1.5) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def test_transcribe_array_gives_text_and_timed_segments(whisper_path: Path) -> None:
    loader = WhisperLoader()
    model = loader.load(whisper_path, device="cpu")
    result = model.transcribe(tone(), **FAST)
    assert set(result) == {"text", "segments", "language", "language_probability", "duration"}
    assert result["language"] == "en"
    assert result["duration"] == pytest.approx(1.5)
    assert isinstance(result["text"], str)
    assert result["segments"], "a random model still decodes tokens"
    for seg in result["segments"]:
        assert set(seg) == {"start", "end", "text"}
        assert 0.0 <= seg["start"] <= seg["end"]
    assert result["text"] == "".join(s["text"] for s in result["segments"]).strip()
    assert model.transcribe(tone(), **FAST) == result  # deterministic
    loader.unload()
    again = WhisperLoader().load(whisper_path, device="cpu").transcribe(tone(), **FAST)
    assert again == result


def test_transcribe_a_file_equals_the_array(whisper_path: Path, tmp_path: Path) -> None:
    audio = tone()
    file = tmp_path / "tone.wav"
    with wave.open(str(file), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((audio * 32767).astype("<i2").tobytes())
    model = WhisperLoader().load(whisper_path, device="cpu")
    from_file = model.transcribe(file, **FAST)
    assert from_file["duration"] == pytest.approx(1.5, abs=0.01)
    assert from_file["language"] == "en" and from_file["segments"]


def test_estimate_and_bad_directories(whisper_path: Path, tmp_path: Path) -> None:
    size_mb = (whisper_path / "model.bin").stat().st_size / (1 << 20)
    assert WhisperLoader().estimate_vram(whisper_path) >= size_mb
    (tmp_path / "model.bin").write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match=r"missing config\.json, tokenizer\.json"):
        WhisperLoader().load(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ModelLoadError) as info:
        WhisperLoader().load(tmp_path, device="cpu")
    assert info.value.context["path"] == str(tmp_path)
