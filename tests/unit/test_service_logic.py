"""The decisions of mlsup.service's HTTP shell, without a server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import ValidationError

from mlsup.errors import (
    CapacityExceeded,
    ConfigError,
    FallbackExhausted,
    InvalidRequest,
    LeaseTimeout,
    ModelLoadError,
    Preempted,
    RequestTimeout,
)
from mlsup.service.app_logic import (
    ChatRequest,
    RunnerPhase,
    chat_call,
    counts_as_activity,
    error_reply,
    health,
    idle_due,
    model_loaded,
)

HELLO = {"messages": [{"role": "user", "content": "Hello"}]}


class ChatService:
    def chat(self, messages: list[dict[str, Any]], **options: Any) -> str:
        return "unused"


class InferService:
    model: Any = None

    async def infer(self, text: str) -> str:
        return text


def test_chat_requests_go_to_chat_with_their_options() -> None:
    service = ChatService()
    request = ChatRequest.model_validate({**HELLO, "max_tokens": 8, "temperature": 0.0})
    call, args, kwargs = chat_call(service, request)
    assert call == service.chat
    assert args == ([{"role": "user", "content": "Hello"}],)
    assert kwargs == {"max_tokens": 8, "temperature": 0.0}


def test_without_chat_the_last_user_message_goes_to_infer() -> None:
    service = InferService()
    request = ChatRequest.model_validate(
        {
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "second"},
            ]
        }
    )
    call, args, kwargs = chat_call(service, request)
    assert call == service.infer and args == ("second",) and kwargs == {}


def test_infer_takes_no_options_and_needs_a_user_message() -> None:
    with pytest.raises(InvalidRequest, match="max_tokens"):
        chat_call(InferService(), ChatRequest.model_validate({**HELLO, "max_tokens": 8}))
    only_system = ChatRequest.model_validate({"messages": [{"role": "system", "content": "x"}]})
    with pytest.raises(InvalidRequest, match="no user message"):
        chat_call(InferService(), only_system)


def test_a_service_without_chat_or_infer_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="neither chat"):
        chat_call(object(), ChatRequest.model_validate(HELLO))


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"messages": []},
        {"messages": "Hello"},
        {"messages": [{"role": "robot", "content": "x"}]},
        {"messages": [{"role": "user"}]},
        {**HELLO, "temperature": -1},
        {**HELLO, "max_tokens": 0},
        {**HELLO, "max_tokns": 5},
    ],
)
def test_bad_bodies_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ChatRequest.model_validate(body)


class Flagged:
    model_loaded = True


class Model:
    def __init__(self, loaded: bool) -> None:
        self.loaded = loaded


class WithModel:
    def __init__(self, model: Any) -> None:
        self.model = model


@pytest.mark.parametrize(
    ("service", "loaded"),
    [
        (Flagged(), True),
        (WithModel(None), False),
        (WithModel(Model(True)), True),
        (WithModel(Model(False)), False),
        (WithModel(object()), True),  # a model without a "loaded" flag is loaded when set
        (None, False),
    ],
)
def test_model_loaded_rule(service: Any, loaded: bool) -> None:
    assert model_loaded(service) is loaded


def test_health_in_each_phase() -> None:
    service = WithModel(Model(True))
    assert health(RunnerPhase.STARTING, service, None) == (
        503,
        {"status": "loading", "model_loaded": False},
    )
    assert health(RunnerPhase.READY, service, None) == (200, {"status": "ok", "model_loaded": True})
    unloaded = WithModel(Model(False))  # unloaded (idle, preempted): it loads again on use
    assert health(RunnerPhase.READY, unloaded, None) == (
        200,
        {"status": "ok", "model_loaded": False},
    )
    code, body = health(RunnerPhase.FAILED, service, ModelLoadError("no file"))
    assert code == 503 and body["status"] == "failed"
    assert body["error"] == {"type": "ModelLoadError", "message": "no file"}
    assert health(RunnerPhase.STOPPING, service, None)[0] == 503


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidRequest("bad"), 422),
        (LeaseTimeout("busy"), 503),
        (Preempted("yielded"), 503),
        (CapacityExceeded("too big"), 503),
        (FallbackExhausted("all busy"), 503),
        (RequestTimeout("slow"), 504),
        (asyncio.TimeoutError(), 504),
        (TimeoutError(), 504),
        (ModelLoadError("broken"), 500),
        (ConfigError("misconfigured"), 500),
        (RuntimeError("bug"), 500),
    ],
)
def test_error_status(error: BaseException, status: int) -> None:
    reply = error_reply(error)
    assert reply.status == status
    assert reply.body() == {"error": {"type": type(error).__name__, "message": reply.message}}
    assert reply.message  # never empty, even for an exception without a message
    assert ("Retry-After" in reply.headers) is (status == 503)


def test_idle_rule() -> None:
    assert idle_due(last_activity=10.0, now=15.0, idle_s=5.0, in_flight=0)
    assert not idle_due(last_activity=10.0, now=14.9, idle_s=5.0, in_flight=0)
    assert not idle_due(last_activity=10.0, now=99.0, idle_s=5.0, in_flight=1)


def test_probes_do_not_count_as_activity() -> None:
    assert not counts_as_activity("/health") and not counts_as_activity("/metrics")
    assert counts_as_activity("/chat") and counts_as_activity("/anything")
