"""Job data in, JSON results out: pure, and the same for every runner.

A job's data is its operation's arguments, in the shapes of the OpenAI-style gateway bodies::

    chat            {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 64, ...}
    complete        {"prompt": "Once upon", "max_tokens": 16, ...}       (also ``generate``)
    embed           {"input": ["a cat", "a kitten"]}                     (or one string)
    tokenize        {"text": "hello"}
    generate_image  {"prompt": "a red square", "steps": 20, "seed": 1, "width": 512, ...}
    transcribe      {"audio": "<base64 of a WAV file>", "language": "en", ...}
    run             {"inputs": {"x": [[1, 2, 3, 4]]}, "dtypes": {"x": "float32"}}

``"op"`` names another operation of the queue's model than the queue's default. Anything else
is refused: :func:`plan_call` raises :class:`~mlsup.errors.InvalidJobData` naming the field,
and the job fails at once, without retries. Results become JSON (:func:`result_json`): arrays
as nested lists, images as base64 PNG, everything else as the model returned it.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import struct
import wave
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
from msgspec import UNSET, Meta, UnsetType

from mlsup.errors import InvalidJobData

__all__ = ["JobCall", "plan_call", "png_bytes", "result_json", "wav_samples"]

#: Sample rate whisper models expect (Hz); WAV audio at another rate is resampled to it.
SAMPLE_RATE = 16_000

_Positive = Annotated[int, Meta(gt=0)]
_NonNegative = Annotated[float, Meta(ge=0)]


class _Job(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    def call(self) -> tuple[list[Any], dict[str, Any]]:
        """Positional and keyword arguments of the model method."""
        raise NotImplementedError

    def _options(self, *positional: str) -> dict[str, Any]:
        return {
            name: getattr(self, name)
            for name in self.__struct_fields__
            if name not in positional and getattr(self, name) is not UNSET
        }


class _Generation(_Job, kw_only=True):
    max_tokens: _Positive | UnsetType = UNSET
    temperature: _NonNegative | UnsetType = UNSET
    top_p: Annotated[float, Meta(ge=0, le=1)] | UnsetType = UNSET
    top_k: Annotated[int, Meta(ge=0)] | UnsetType = UNSET
    min_p: Annotated[float, Meta(ge=0, le=1)] | UnsetType = UNSET
    seed: int | UnsetType = UNSET
    stop: str | list[str] | UnsetType = UNSET
    repeat_penalty: _NonNegative | UnsetType = UNSET
    presence_penalty: float | UnsetType = UNSET
    frequency_penalty: float | UnsetType = UNSET


class Message(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One chat message."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    name: str | UnsetType = UNSET


class _Chat(_Generation, kw_only=True):
    messages: Annotated[list[Message], Meta(min_length=1)]

    def call(self) -> tuple[list[Any], dict[str, Any]]:
        messages = [msgspec.to_builtins(m) for m in self.messages]
        return [messages], self._options("messages")


class _Prompt(_Generation, kw_only=True):
    prompt: str

    def call(self) -> tuple[list[Any], dict[str, Any]]:
        return [self.prompt], self._options("prompt")


class _Embed(_Job, kw_only=True):
    input: str | Annotated[list[str], Meta(min_length=1)]

    def call(self) -> tuple[list[Any], dict[str, Any]]:
        texts = [self.input] if isinstance(self.input, str) else self.input
        return [texts], {}


class _Tokenize(_Job, kw_only=True):
    text: str

    def call(self) -> tuple[list[Any], dict[str, Any]]:
        return [self.text], {}


class _Image(_Job, kw_only=True):
    prompt: str
    negative_prompt: str | UnsetType = UNSET
    steps: Annotated[int, Meta(ge=1, le=500)] | UnsetType = UNSET
    guidance: _NonNegative | UnsetType = UNSET
    seed: int | UnsetType = UNSET
    width: Annotated[int, Meta(ge=8, le=8192, multiple_of=8)] | UnsetType = UNSET
    height: Annotated[int, Meta(ge=8, le=8192, multiple_of=8)] | UnsetType = UNSET

    def call(self) -> tuple[list[Any], dict[str, Any]]:
        return [self.prompt], self._options("prompt")


class _Transcribe(_Job, kw_only=True):
    audio: str
    language: str | UnsetType = UNSET
    beam_size: _Positive | UnsetType = UNSET
    temperature: _NonNegative | UnsetType = UNSET
    max_new_tokens: _Positive | UnsetType = UNSET
    vad_filter: bool | UnsetType = UNSET

    def call(self) -> tuple[list[Any], dict[str, Any]]:
        return [wav_samples(_base64(self.audio, "audio"))], self._options("audio")


class _Run(_Job, kw_only=True):
    inputs: dict[str, Any] = {}
    dtypes: dict[str, str] = {}

    def call(self) -> tuple[list[Any], dict[str, Any]]:
        unknown = sorted(set(self.dtypes) - set(self.inputs))
        if unknown:
            raise _invalid(f"dtypes.{unknown[0]}", "names no input")
        return [{name: self._tensor(name, value) for name, value in self.inputs.items()}], {}

    def _tensor(self, name: str, value: Any) -> Any:
        if not isinstance(value, list):
            return value  # scalars and tables pass as they are (the model decides)
        dtype = self.dtypes.get(name)
        try:
            return np.asarray(value, dtype=np.dtype(dtype) if dtype else None)
        except TypeError as exc:
            raise _invalid(f"dtypes.{name}", f"{dtype!r} is not a numpy dtype") from exc
        except ValueError as exc:
            problem = f"is not a rectangular array of numbers: {exc}"
            raise _invalid(f"inputs.{name}", problem) from None


_SCHEMAS: Mapping[str, type[_Job]] = {
    "chat": _Chat,
    "complete": _Prompt,
    "generate": _Prompt,
    "embed": _Embed,
    "tokenize": _Tokenize,
    "generate_image": _Image,
    "transcribe": _Transcribe,
    "run": _Run,
}


@dataclass(frozen=True)
class JobCall:
    """What one job asks of the model: ``op(*args, **kwargs)``."""

    op: str
    args: list[Any]
    kwargs: dict[str, Any]


def plan_call(data: Any, default_op: str, operations: frozenset[str]) -> JobCall:
    """The model call a job's ``data`` asks for; InvalidJobData naming the field otherwise."""
    if not isinstance(data, Mapping):
        raise _invalid("data", f"must be a JSON object, not {type(data).__name__}")
    op = data.get("op", default_op)
    if not isinstance(op, str) or op not in operations or op not in _SCHEMAS:
        offered = ", ".join(sorted(operations & set(_SCHEMAS)))
        raise _invalid("op", f"{op!r} is not an operation of this queue's model; use {offered}")
    body = {key: value for key, value in data.items() if key != "op"}
    try:
        job = msgspec.convert(body, _SCHEMAS[op])
    except msgspec.ValidationError as exc:
        field, problem = _explain(str(exc))
        raise _invalid(field, problem) from None
    args, kwargs = job.call()
    return JobCall(op, args, kwargs)


def _explain(message: str) -> tuple[str, str]:
    """(field, problem) from a msgspec error such as "Expected `int`, got `str` - at `$.x`"."""
    problem, _, path = message.partition(" - at `$")
    field = path.rstrip("`").lstrip(".")
    named = re.search(r"field `([^`]+)`", problem)
    if named:
        field = f"{field}.{named.group(1)}" if field else named.group(1)
    return field or "data", problem.replace("`", "'")


def _invalid(field: str, problem: str) -> InvalidJobData:
    return InvalidJobData(f"invalid job data: {field}: {problem}", field=field)


def _base64(text: str, field: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _invalid(field, f"is not base64: {exc}") from None


def wav_samples(data: bytes, field: str = "audio") -> np.ndarray[Any, Any]:
    """16 kHz mono float32 samples of a PCM WAV file (8, 16 or 32 bit; resampled, downmixed)."""
    try:
        with wave.open(io.BytesIO(data)) as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as exc:
        raise _invalid(field, f"is not a PCM WAV file: {exc}") from None
    kinds = {1: (np.uint8, 128.0, 128.0), 2: (np.int16, 0.0, 32768.0), 4: (np.int32, 0.0, 2.0**31)}
    if width not in kinds or rate <= 0:
        raise _invalid(field, f"WAV of {8 * width}-bit samples at {rate} Hz; send 8/16/32-bit PCM")
    dtype, offset, scale = kinds[width]
    samples = (np.frombuffer(frames, dtype=dtype).astype(np.float32) - offset) / scale
    samples = samples.reshape(-1, channels).mean(axis=1)
    if rate != SAMPLE_RATE:
        times = np.arange(int(len(samples) * SAMPLE_RATE / rate)) * (rate / SAMPLE_RATE)
        samples = np.interp(times, np.arange(len(samples)), samples)
    return np.ascontiguousarray(samples, dtype=np.float32)


def result_json(op: str, value: Any) -> Any:
    """The model's result as JSON-ready data: arrays as lists, an image as base64 PNG."""
    if op == "generate_image" and isinstance(value, np.ndarray):
        height, width = value.shape[:2]
        png = base64.b64encode(png_bytes(value)).decode("ascii")
        return {"b64_json": png, "mime_type": "image/png", "width": width, "height": height}
    return _plain(value)


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    return value


def png_bytes(image: np.ndarray[Any, Any]) -> bytes:
    """A PNG file of a uint8 image of shape (H, W), (H, W, 3) or (H, W, 4)."""
    pixels = np.ascontiguousarray(image, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    height, width, channels = pixels.shape
    color = {1: 0, 3: 2, 4: 6}[channels]  # grey, RGB, RGBA

    def chunk(tag: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(tag + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", crc)

    rows = np.concatenate([np.zeros((height, 1), np.uint8), pixels.reshape(height, -1)], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes()))
        + chunk(b"IEND", b"")
    )
