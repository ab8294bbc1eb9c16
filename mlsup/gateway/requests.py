"""Request bodies of the OpenAI routes (pydantic, validated by FastAPI) and their translation
into typed proxy calls: pure.

Fields the API defines but mlsup cannot honour (``n`` > 1 for text, ``logprobs``, token-id
inputs, image URLs) are refused with a 400 naming the field, rather than silently ignored.
Fields that only tune the client side (``user``, ``logit_bias`` absent...) are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mlsup.errors import ConfigError

__all__ = [
    "COMPLETION_MAX_TOKENS",
    "ChatRequest",
    "CompletionRequest",
    "EmbeddingRequest",
    "GenerationCall",
    "ImageRequest",
    "chat_call",
    "completion_call",
    "embedding_texts",
    "image_options",
    "message_texts",
]

#: ``max_tokens`` of /v1/completions when the request gives none: the OpenAI API's default.
COMPLETION_MAX_TOKENS = 16


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str = Field(min_length=1)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class _Generation(_Body):
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=1)  # one choice per request
    logprobs: Any = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(_Generation):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)


class CompletionRequest(_Generation):
    prompt: str | list[str]
    echo: bool = False


class EmbeddingRequest(_Body):
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"


class ImageRequest(_Body):
    prompt: str = Field(min_length=1)
    n: int = Field(default=1, ge=1, le=10)
    size: str | None = None
    response_format: Literal["b64_json"] = "b64_json"
    seed: int | None = None


@dataclass(frozen=True)
class GenerationCall:
    """A chat or completion as the proxy takes it: the input and the generation keywords."""

    prompt: Any  # list of {"role", "content"} messages, or a prompt string
    kwargs: dict[str, Any]
    stream: bool
    include_usage: bool

    @property
    def max_tokens(self) -> int | None:
        value = self.kwargs.get("max_tokens")
        return None if value is None else int(value)


def _kwargs(body: _Generation, max_tokens: int | None) -> dict[str, Any]:
    if body.logprobs:
        raise ConfigError("logprobs are not supported", field="logprobs")
    values = {
        "max_tokens": max_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "stop": body.stop,
        "seed": body.seed,
    }
    return {key: value for key, value in values.items() if value is not None}


def message_texts(messages: list[ChatMessage]) -> list[dict[str, str]]:
    """Messages as ``{"role", "content"}`` with text content; text parts are joined, other
    parts (images, audio) are refused."""
    plain = []
    for i, message in enumerate(messages):
        content = message.content
        if isinstance(content, list):
            texts = []
            for part in content:
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise ConfigError(
                        f"messages[{i}]: only text content parts are supported, not "
                        f"{part.get('type')!r}",
                        field=f"messages[{i}].content",
                    )
                texts.append(part["text"])
            content = "".join(texts)
        plain.append({"role": message.role, "content": content or ""})
    return plain


def chat_call(body: ChatRequest) -> GenerationCall:
    max_tokens = body.max_completion_tokens or body.max_tokens
    include = bool(body.stream_options and body.stream_options.include_usage)
    return GenerationCall(
        message_texts(body.messages), _kwargs(body, max_tokens), body.stream, include
    )


def completion_call(body: CompletionRequest) -> GenerationCall:
    prompt = body.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise ConfigError(
                "prompt: one prompt per request (a list of exactly one string)", field="prompt"
            )
        prompt = prompt[0]
    if body.echo:
        raise ConfigError("echo is not supported", field="echo")
    include = bool(body.stream_options and body.stream_options.include_usage)
    max_tokens = body.max_tokens or COMPLETION_MAX_TOKENS
    return GenerationCall(prompt, _kwargs(body, max_tokens), body.stream, include)


def embedding_texts(body: EmbeddingRequest) -> list[str]:
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    if not texts:
        raise ConfigError("input: give a string or a non-empty list of strings", field="input")
    if any(not text for text in texts):
        raise ConfigError("input: empty strings cannot be embedded", field="input")
    return texts


def image_options(body: ImageRequest) -> dict[str, Any]:
    """``generate_image`` keywords: ``size`` ``"WxH"`` becomes width and height."""
    options: dict[str, Any] = {}
    if body.size is not None:
        width, sep, height = body.size.lower().partition("x")
        if not sep or not width.isdigit() or not height.isdigit():
            raise ConfigError(f"size must be WIDTHxHEIGHT, not {body.size!r}", field="size")
        w, h = int(width), int(height)
        if not (8 <= w <= 4096 and 8 <= h <= 4096) or w % 8 or h % 8:
            raise ConfigError(
                f"size {body.size!r}: width and height must be multiples of 8 within 8..4096",
                field="size",
            )
        options.update(width=w, height=h)
    if body.seed is not None:
        options["seed"] = body.seed
    return options
