"""The OpenAI API's response bodies, stream chunks and server-sent-event framing: pure functions
over plain data, so that every shape is unit-tested without a server.

Shapes follow the OpenAI API reference (chat.completion, chat.completion.chunk,
text_completion, embedding list, image and transcription responses, model objects, errors).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import numpy as np

__all__ = [
    "DONE",
    "Head",
    "Usage",
    "chat_chunk",
    "chat_response",
    "embeddings_response",
    "error_body",
    "finish_reason",
    "images_response",
    "model_object",
    "new_id",
    "sse",
    "text_chunk",
    "text_response",
    "transcription_response",
]

#: The event that ends every stream.
DONE = b"data: [DONE]\n\n"
FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class Usage:
    """Token counts, from the model's own tokenizer."""

    prompt_tokens: int
    completion_tokens: int = 0

    def body(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


@dataclass(frozen=True)
class Head:
    """What every chunk of one response shares: its id, creation time and model."""

    id: str
    created: int
    model: str

    def fields(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}


def new_id(prefix: str) -> str:
    """``chatcmpl-…`` / ``cmpl-…``: unique per response, shared by its chunks."""
    return f"{prefix}-{secrets.token_hex(12)}"


def sse(payload: Mapping[str, Any]) -> bytes:
    """One server-sent event: ``data: {json}`` and a blank line."""
    return b"data: " + msgspec.json.encode(payload) + b"\n\n"


def finish_reason(completion_tokens: int, max_tokens: int | None) -> FinishReason:
    """``length`` when the generation used its whole budget, else ``stop``."""
    return "length" if max_tokens is not None and completion_tokens >= max_tokens else "stop"


def chat_response(head: Head, text: str, usage: Usage, finish: FinishReason) -> dict[str, Any]:
    message = {"role": "assistant", "content": text}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
    return {**head.fields("chat.completion"), "choices": [choice], "usage": usage.body()}


def chat_chunk(
    head: Head,
    delta: Mapping[str, Any] | None,
    finish: FinishReason | None = None,
    *,
    usage: Usage | None = None,
    with_usage: bool = False,
) -> dict[str, Any]:
    """A ``chat.completion.chunk``; ``delta`` None gives the usage-only last chunk (no
    choices). With ``with_usage`` (stream_options.include_usage) every chunk has ``usage``,
    null except on the last."""
    choices = (
        []
        if delta is None
        else [{"index": 0, "delta": dict(delta), "logprobs": None, "finish_reason": finish}]
    )
    chunk = {**head.fields("chat.completion.chunk"), "choices": choices}
    if with_usage:
        chunk["usage"] = usage.body() if usage is not None else None
    return chunk


def text_response(head: Head, text: str, usage: Usage, finish: FinishReason) -> dict[str, Any]:
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
    return {**head.fields("text_completion"), "choices": [choice], "usage": usage.body()}


def text_chunk(
    head: Head,
    text: str | None,
    finish: FinishReason | None = None,
    *,
    usage: Usage | None = None,
    with_usage: bool = False,
) -> dict[str, Any]:
    """A streamed ``text_completion`` piece; ``text`` None gives the usage-only last chunk."""
    choices = (
        []
        if text is None
        else [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]
    )
    chunk = {**head.fields("text_completion"), "choices": choices}
    if with_usage:
        chunk["usage"] = usage.body() if usage is not None else None
    return chunk


def embeddings_response(
    model: str, vectors: Any, encoding_format: Literal["float", "base64"], prompt_tokens: int
) -> dict[str, Any]:
    """An embedding list; ``base64`` is the little-endian float32 bytes, as OpenAI sends."""
    array = np.ascontiguousarray(vectors, dtype="<f4")
    if array.ndim != 2:
        raise ValueError(f"expected a (n, dim) array of embeddings, got shape {array.shape}")
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": base64.b64encode(row.tobytes()).decode("ascii")
            if encoding_format == "base64"
            else row.tolist(),
        }
        for i, row in enumerate(array)
    ]
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return {"object": "list", "data": data, "model": model, "usage": usage}


def images_response(created: int, pngs: Sequence[bytes]) -> dict[str, Any]:
    return {
        "created": created,
        "data": [{"b64_json": base64.b64encode(png).decode("ascii")} for png in pngs],
    }


def transcription_response(
    result: Mapping[str, Any], response_format: Literal["json", "text", "verbose_json"]
) -> tuple[Any, str]:
    """The body and its media type: ``{"text"}``, plain text, or the verbose form with
    segments, language and duration."""
    text = str(result.get("text", ""))
    if response_format == "text":
        return text + "\n", "text/plain; charset=utf-8"
    if response_format == "json":
        return {"text": text}, "application/json"
    segments = [
        {
            "id": i,
            "seek": 0,
            "start": float(segment["start"]),
            "end": float(segment["end"]),
            "text": str(segment["text"]),
        }
        for i, segment in enumerate(result.get("segments", []))
    ]
    body = {
        "task": "transcribe",
        "language": result.get("language"),
        "duration": result.get("duration"),
        "text": text,
        "segments": segments,
    }
    return body, "application/json"


def model_object(model: str, kind: str, state: str, created: int) -> dict[str, Any]:
    """A ``model`` object, with mlsup's own ``kind`` and ``state`` fields added."""
    return {
        "id": model,
        "object": "model",
        "created": created,
        "owned_by": "mlsup",
        "kind": kind,
        "state": state,
    }


def error_body(
    message: str, type_: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """The OpenAI error body: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
