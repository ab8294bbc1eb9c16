"""create_app's error mapping and lifespan with services that misbehave on purpose, served by
a real uvicorn server (in a thread of the test process) and called with httpx."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from mlsup.errors import LeaseTimeout, Preempted
from mlsup.service import GPULifespanManager, create_app

from .service_helpers import free_port

HELLO = {"messages": [{"role": "user", "content": "Hello"}]}


class Behaviour:
    """What the test service does; shared with the test through the class (the lifespan
    constructs the service itself)."""

    gate = threading.Event()
    raises: BaseException | None = None
    shutdowns = 0


class TestService:
    __test__ = False

    def __init__(self) -> None:
        self.model_loaded = True

    async def startup(self) -> None:
        pass

    def chat(self, messages: list[dict[str, Any]], **options: Any) -> str:
        # A plain function: the app runs it as it is; it blocks like a model call.
        if Behaviour.raises is not None:
            raise Behaviour.raises
        if not Behaviour.gate.wait(timeout=30):
            raise AssertionError("the gate never opened")
        return f"echo: {messages[-1]['content']}"

    async def shutdown(self) -> None:
        Behaviour.shutdowns += 1


def stop_server(server: uvicorn.Server, thread: threading.Thread) -> None:
    Behaviour.gate.set()
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture
def servers() -> list[tuple[uvicorn.Server, threading.Thread]]:
    return []


@pytest.fixture
def serve_app(
    servers: list[tuple[uvicorn.Server, threading.Thread]],
) -> Iterator[Callable[..., str]]:

    def start(**options: Any) -> str:
        Behaviour.gate = threading.Event()
        Behaviour.raises, Behaviour.shutdowns = None, 0
        app = create_app("test", lifespan=GPULifespanManager(TestService), **options)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
            time.sleep(0.01)
        return base

    yield start
    for server, thread in servers:
        stop_server(server, thread)


def test_a_call_past_its_deadline_is_a_504_and_the_server_keeps_serving(
    serve_app: Callable[..., str],
) -> None:
    base = serve_app(request_timeout_s=0.2)
    answer = httpx.post(f"{base}/chat", json=HELLO, timeout=30)
    assert answer.status_code == 504
    assert answer.json()["error"]["type"] == "TimeoutError"
    assert "0.2 s" in answer.json()["error"]["message"]
    Behaviour.gate.set()
    answer = httpx.post(f"{base}/chat", json=HELLO, timeout=30)
    assert answer.status_code == 200 and answer.json() == {"content": "echo: Hello"}


@pytest.mark.parametrize("error", [LeaseTimeout("no lease in 30 s"), Preempted("yielded")])
def test_not_now_errors_are_503_with_retry_after(
    serve_app: Callable[..., str], error: BaseException
) -> None:
    base = serve_app()
    Behaviour.raises = error
    answer = httpx.post(f"{base}/chat", json=HELLO, timeout=30)
    assert answer.status_code == 503 and answer.headers["retry-after"].isdigit()
    assert answer.json()["error"]["type"] == type(error).__name__
    assert answer.json()["error"]["message"].startswith(str(error)[:10])


def test_a_bug_is_a_500_json_error_without_a_traceback(serve_app: Callable[..., str]) -> None:
    base = serve_app()
    Behaviour.raises = RuntimeError("boom")
    answer = httpx.post(f"{base}/chat", json=HELLO, timeout=30)
    assert answer.status_code == 500
    assert answer.json() == {"error": {"type": "RuntimeError", "message": "boom"}}
    assert "Traceback" not in answer.text


def test_the_lifespan_exposes_the_service_and_shuts_it_down(
    serve_app: Callable[..., str], servers: list[tuple[uvicorn.Server, threading.Thread]]
) -> None:
    base = serve_app()
    assert httpx.get(f"{base}/health").json() == {"status": "ok", "model_loaded": True}
    server, thread = servers[0]
    assert isinstance(server.config.app.state.service, TestService)
    assert Behaviour.shutdowns == 0
    stop_server(server, thread)
    assert not thread.is_alive() and Behaviour.shutdowns == 1


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="idle_shutdown_s"):
        create_app("x", idle_shutdown_s=0)
    with pytest.raises(ValueError, match="request_timeout_s"):
        create_app("x", request_timeout_s=-1)
