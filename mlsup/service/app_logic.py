"""The decisions of a feature runner's HTTP shell, apart from any server (tested on their own).

- :class:`ChatRequest`: the ``POST /chat`` body, validated; :func:`chat_call` turns it into the
  call of the service's ``chat(messages, **options)``, else ``infer(last user text)``.
- :func:`model_loaded` and :func:`health`: what ``GET /health`` answers in each phase.
- :func:`error_reply`: an exception as a status code and a JSON error body.
- :func:`idle_due` and :func:`counts_as_activity`: when an idle runner shuts down.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mlsup import defaults
from mlsup.errors import FallbackExhausted, InvalidRequest, RequestTimeout
from mlsup.service.fallback import is_not_now

__all__ = [
    "UNTRACKED_PATHS",
    "ChatMessage",
    "ChatRequest",
    "ErrorReply",
    "RunnerPhase",
    "chat_call",
    "counts_as_activity",
    "error_reply",
    "health",
    "idle_due",
    "model_loaded",
]

#: Probes that do not keep a runner awake (its idle time counts through them).
UNTRACKED_PATHS = frozenset({"/health", "/metrics"})


class RunnerPhase(enum.Enum):
    """Where a runner is in its life, as ``/health`` reports it."""

    STARTING = "loading"
    READY = "ok"
    FAILED = "failed"
    STOPPING = "stopping"


class ChatMessage(BaseModel):
    """One OpenAI-style message."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant", "tool"]
    content: str = Field(max_length=1_000_000)
    name: str | None = Field(default=None, max_length=256)


class ChatRequest(BaseModel):
    """The ``POST /chat`` body: ``messages`` and the generation options llama.cpp and
    transformers share. Unknown fields are refused (422), so a typo is not silently ignored."""

    model_config = ConfigDict(extra="forbid")

    messages: list[ChatMessage] = Field(min_length=1, max_length=10_000)
    max_tokens: int | None = Field(default=None, gt=0, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    seed: int | None = None
    stop: str | list[str] | None = None
    repeat_penalty: float | None = Field(default=None, gt=0)

    def options(self) -> dict[str, Any]:
        """The generation options that were given."""
        return self.model_dump(exclude={"messages"}, exclude_none=True)


def chat_call(
    service: Any, request: ChatRequest
) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
    """The call that answers ``request``: ``service.chat(messages, **options)`` when the
    service has ``chat``, else ``service.infer(text of the last user message)``.

    :class:`InvalidRequest` when ``infer`` cannot take what was asked (options, or no user
    message); :class:`TypeError` when the service has neither method (a programming error).
    """
    messages = [m.model_dump(exclude_none=True) for m in request.messages]
    options = request.options()
    chat = getattr(service, "chat", None)
    if callable(chat):
        return chat, (messages,), options
    infer = getattr(service, "infer", None)
    if not callable(infer):
        raise TypeError(
            f"{type(service).__name__} has neither chat(messages, **options) nor infer(text); "
            "give the service one of them to serve POST /chat"
        )
    if options:
        raise InvalidRequest(
            f"this runner's infer(text) takes no generation options; drop "
            f"{', '.join(sorted(options))}",
            field=", ".join(sorted(options)),
        )
    users = [m.content for m in request.messages if m.role == "user"]
    if not users:
        raise InvalidRequest("messages hold no user message to answer", field="messages")
    return infer, (users[-1],), {}


def model_loaded(service: Any) -> bool:
    """The service's ``model_loaded`` attribute if it has one; else whether its ``model`` is
    set and (when it says) loaded."""
    flag = getattr(service, "model_loaded", None)
    if flag is not None and not callable(flag):
        return bool(flag)
    model = getattr(service, "model", None)
    if model is None:
        return False
    return bool(getattr(model, "loaded", True))


def health(
    phase: RunnerPhase, service: Any, error: BaseException | None
) -> tuple[int, dict[str, Any]]:
    """``GET /health``'s status and body: 200 once started (``model_loaded`` tells whether the
    model is loaded now or will load on use), 503 while starting, stopping or failed."""
    if phase is RunnerPhase.READY:
        return 200, {"status": phase.value, "model_loaded": model_loaded(service)}
    body: dict[str, Any] = {"status": phase.value, "model_loaded": False}
    if phase is RunnerPhase.FAILED and error is not None:
        body["error"] = {"type": type(error).__name__, "message": str(error)}
    return 503, body


@dataclass(frozen=True)
class ErrorReply:
    """An error as HTTP: status, JSON body ``{"error": {"type", "message"}}`` and headers."""

    status: int
    type: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {"error": {"type": self.type, "message": self.message}}


def error_reply(error: BaseException) -> ErrorReply:
    """The status of an error raised while serving: 422 bad input, 504 a timeout, 503 (with
    ``Retry-After``) when the model cannot serve now (no lease in time, preempted, too big or
    out of memory now, every fallback tier busy), 500 for anything else."""
    name = type(error).__name__
    if isinstance(error, InvalidRequest):
        return ErrorReply(422, name, str(error))
    if isinstance(error, (RequestTimeout, TimeoutError, asyncio.TimeoutError)):
        message = str(error) or "the request did not finish within the runner's deadline"
        return ErrorReply(504, name, message)
    if is_not_now(error) or isinstance(error, FallbackExhausted):
        retry = {"Retry-After": str(defaults.SERVICE_RETRY_AFTER_S)}
        return ErrorReply(503, name, str(error), retry)
    return ErrorReply(500, name, str(error) or name)


def idle_due(*, last_activity: float, now: float, idle_s: float, in_flight: int) -> bool:
    """Whether a runner has been idle for ``idle_s`` seconds (never while requests run)."""
    return in_flight == 0 and now - last_activity >= idle_s


def counts_as_activity(path: str) -> bool:
    """Whether a request to ``path`` keeps the runner awake (probes do not)."""
    return path not in UNTRACKED_PATHS
