"""The runner's own tests (``pytest`` in this directory, step 5 of the seed's verification):
the service answers through the app, in process, with the real model and the real Redis."""

from fastapi.testclient import TestClient
from kv_ml_runner.service import app


def test_chat_then_health() -> None:
    with TestClient(app) as client:
        # /chat waits for the service's startup (the model preload) before it answers.
        answer = client.post("/chat", json={"messages": [{"role": "user", "content": "Hello"}]})
        assert answer.status_code == 200, answer.text
        assert isinstance(answer.json()["content"], str) and answer.json()["content"]
        assert client.get("/health").json() == {"status": "ok", "model_loaded": True}


def test_a_bad_body_is_a_422_json_error() -> None:
    with TestClient(app) as client:
        answer = client.post("/chat", json={"messages": "Hello"})
        assert answer.status_code == 422
        assert answer.json()["error"]["type"] == "InvalidRequest"
