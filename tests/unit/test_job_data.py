"""Job data -> model call, and model results -> JSON: every operation, and refusals that name
the field."""

from __future__ import annotations

import base64
import io
import json
import struct
import wave
import zlib
from typing import Any

import numpy as np
import pytest

from mlsup.errors import InvalidJobData
from mlsup.queues.config import ALL_OPERATIONS
from mlsup.queues.jobdata import SAMPLE_RATE, plan_call, png_bytes, result_json, wav_samples

HI = [{"role": "user", "content": "hi"}]


def wav(samples: np.ndarray, rate: int = SAMPLE_RATE, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((samples * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "op", "args", "kwargs"),
    [
        ({"messages": HI, "max_tokens": 8, "temperature": 0, "seed": 1}, "chat", [HI],
         {"max_tokens": 8, "temperature": 0.0, "seed": 1}),
        ({"op": "complete", "prompt": "Once", "stop": ["\n"]}, "complete", ["Once"],
         {"stop": ["\n"]}),
        ({"op": "generate", "prompt": "x"}, "generate", ["x"], {}),
        ({"op": "embed", "input": "a cat"}, "embed", [["a cat"]], {}),
        ({"op": "embed", "input": ["a", "b"]}, "embed", [["a", "b"]], {}),
        ({"op": "tokenize", "text": "hello"}, "tokenize", ["hello"], {}),
        ({"op": "generate_image", "prompt": "red", "steps": 2, "width": 32}, "generate_image",
         ["red"], {"steps": 2, "width": 32}),
        ({"op": "run", "inputs": {"sleep": 0.1}}, "run", [{"sleep": 0.1}], {}),
    ],
)  # fmt: skip
def test_each_operation_becomes_its_call(
    data: dict[str, Any], op: str, args: list[Any], kwargs: dict[str, Any]
) -> None:
    call = plan_call(data, "chat", ALL_OPERATIONS)
    assert (call.op, call.args, call.kwargs) == (op, args, kwargs)


def test_message_names_are_kept() -> None:
    messages = [{"role": "system", "content": "be brief", "name": "rules"}, *HI]
    assert plan_call({"messages": messages}, "chat", ALL_OPERATIONS).args == [messages]


def test_run_inputs_become_arrays_of_the_named_dtype() -> None:
    call = plan_call(
        {"inputs": {"x": [[1, 2], [3, 4]], "k": 3}, "dtypes": {"x": "float32"}}, "run",
        frozenset({"run"}),
    )  # fmt: skip
    x = call.args[0]["x"]
    assert x.dtype == np.float32 and x.shape == (2, 2)
    assert call.args[0]["k"] == 3


def test_transcribe_decodes_wav_audio() -> None:
    tone = np.sin(np.linspace(0, 100, SAMPLE_RATE // 2)).astype(np.float32) * 0.5
    data = {"audio": base64.b64encode(wav(tone)).decode(), "language": "en"}
    call = plan_call(data, "transcribe", frozenset({"transcribe"}))
    samples = call.args[0]
    assert samples.dtype == np.float32 and samples.shape == tone.shape
    assert np.allclose(samples, tone, atol=1e-3)
    assert call.kwargs == {"language": "en"}


def test_wav_at_another_rate_and_in_stereo_becomes_16k_mono() -> None:
    frames = np.tile(np.array([0.5, 0.1], np.float32), 4000)  # 0.5 s of stereo at 8 kHz
    samples = wav_samples(wav(frames, rate=8000, channels=2))
    assert samples.shape == (SAMPLE_RATE // 2,)
    assert np.allclose(samples, 0.3, atol=1e-3)  # the two channels' mean


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ([1, 2], "data", "must be a JSON object"),
        ({"op": "transcribe", "audio": "x"}, "op", "'transcribe' is not an operation"),
        ({"op": 3}, "op", "is not an operation"),
        ({}, "messages", "missing required field"),
        ({"messages": []}, "messages", "length >= 1"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "Invalid enum"),
        ({"messages": [{"role": "user"}]}, "messages[0].content", "missing required field"),
        ({"messages": HI, "max_tokens": "8"}, "max_tokens", "Expected 'int', got 'str'"),
        ({"messages": HI, "max_tokens": 0}, "max_tokens", ">= 1"),
        ({"messages": HI, "temperature": -1}, "temperature", ">= 0"),
        ({"messages": HI, "stream": True}, "stream", "unknown field"),
        ({"op": "embed", "input": 5}, "input", "Expected 'str | array'"),
        ({"op": "embed", "input": []}, "input", "length >= 1"),
        ({"op": "generate_image", "prompt": "x", "width": 33}, "width", "multiple of 8"),
    ],
)
def test_invalid_data_names_the_field(data: Any, field: str, words: str) -> None:
    operations = frozenset({"chat", "embed", "generate_image"})
    with pytest.raises(InvalidJobData) as caught:
        plan_call(data, "chat", operations)
    assert caught.value.context == {"field": field}
    assert str(caught.value).startswith(f"invalid job data: {field}: ")
    assert words in str(caught.value)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"audio": "not base64!"}, "audio"),
        ({"audio": base64.b64encode(b"RIFF....").decode()}, "audio"),
    ],
)
def test_bad_audio_is_refused(data: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidJobData) as caught:
        plan_call(data, "transcribe", frozenset({"transcribe"}))
    assert caught.value.context["field"] == field


def test_bad_run_inputs_are_refused() -> None:
    run = frozenset({"run"})
    with pytest.raises(InvalidJobData, match=r"dtypes\.x: 'floaty' is not a numpy dtype"):
        plan_call({"inputs": {"x": [1]}, "dtypes": {"x": "floaty"}}, "run", run)
    with pytest.raises(InvalidJobData, match=r"dtypes\.y: names no input"):
        plan_call({"inputs": {"x": [1]}, "dtypes": {"y": "int8"}}, "run", run)
    with pytest.raises(InvalidJobData, match=r"inputs\.x: is not a rectangular array"):
        plan_call({"inputs": {"x": [[1], [2, 3]]}}, "run", run)


def test_results_become_json() -> None:
    vectors = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert result_json("embed", vectors) == [[0, 1, 2], [3, 4, 5]]
    assert result_json("chat", "Paris") == "Paris"
    transcript = {"text": "hi", "segments": [{"start": np.float32(0.5)}], "raw": b"\x00\x01"}
    assert result_json("transcribe", transcript) == {
        "text": "hi",
        "segments": [{"start": 0.5}],
        "raw": "AAE=",
    }
    assert result_json("run", {"y": np.ones((1, 2))}) == {"y": [[1.0, 1.0]]}
    json.dumps(result_json("embed", vectors))  # JSON-ready


def decode_png(data: bytes) -> np.ndarray:
    """Read back the PNG: chunks, CRCs, and the unfiltered rows."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, {}
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        tag = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert crc == zlib.crc32(tag + body) & 0xFFFFFFFF
        chunks[tag] = body
        position += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, color) == (8, 2)
    rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(height, -1)
    assert not rows[:, 0].any()  # filter type 0 on every row
    return rows[:, 1:].reshape(height, width, 3)


def test_images_become_base64_png() -> None:
    image = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    result = result_json("generate_image", image)
    assert (result["mime_type"], result["width"], result["height"]) == ("image/png", 7, 5)
    assert np.array_equal(decode_png(base64.b64decode(result["b64_json"])), image)
    assert np.array_equal(decode_png(png_bytes(image)), image)
