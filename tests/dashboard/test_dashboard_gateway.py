"""The dashboard as the gateway serves it: `mlsup start` with an [http] table and an api_key, the
page at /ui behind a login form (cookie), httpx and headless Chromium against the real
processes. One supervisor (two probe models) for the module."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from selenium.webdriver.common.by import By

from mlsup.testing.gateway import free_port, wait_for_gateway
from mlsup.testing.redis import TestRedis
from mlsup.testing.supervisor import RunningSupervisor, manifest

from .helpers import MODELS
from .test_dashboard_browser import wait

# The browser test may install chromium with apt-get (the browser fixture).
pytestmark = pytest.mark.timeout(1200)

KEY = "ui-test-key"


class Served:
    """The supervisor and its gateway's base URL."""

    def __init__(self, supervisor: RunningSupervisor, base: str) -> None:
        self.supervisor = supervisor
        self.base = base

    def login(self, key: str = KEY) -> httpx.Response:
        return httpx.post(f"{self.base}/ui/login", data={"key": key}, timeout=30)

    def cookie_client(self) -> httpx.Client:
        """A client holding the session cookie of a successful login."""
        answer = self.login()
        assert answer.status_code == 303, answer.text
        return httpx.Client(base_url=self.base, cookies=answer.cookies, timeout=30)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, redis_server: TestRedis) -> Iterator[Served]:
    prefix = redis_server.prefix()
    port = free_port()
    http = f'\n[http]\nlisten = "127.0.0.1:{port}"\napi_key = "{KEY}"\n'
    http += '\n[queues.digest]\nmodel = "beta"\nop = "run"\n'  # its counts join /metrics
    directory = tmp_path_factory.mktemp("uigw", numbered=True)
    supervisor = RunningSupervisor(directory, manifest(redis_server.url, prefix, MODELS + http))
    supervisor.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_gateway(base, output=supervisor.output())
        yield Served(supervisor, base)
    finally:
        supervisor.stop()
        redis_server.cleanup(prefix)


def first_event(client: httpx.Client) -> dict[str, Any]:
    """The first snapshot /ui/events sends."""
    with client.stream("GET", "/ui/events") as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data: "):
                snapshot: dict[str, Any] = json.loads(line[len("data: ") :])
                return snapshot
    raise AssertionError("the event stream ended without a snapshot")


def test_ui_without_the_cookie_answers_the_login_form(served: Served) -> None:
    for path in ("/ui", "/ui/"):
        answer = httpx.get(served.base + path, timeout=30, follow_redirects=False)
        assert answer.status_code == 401
        assert '<form method="post" action="/ui/login">' in answer.text
    events = httpx.get(served.base + "/ui/api/snapshot", timeout=30)
    assert events.status_code == 401 and "/ui/login" in events.json()["error"]["message"]


def test_a_wrong_key_gets_the_form_again_with_an_error(served: Served) -> None:
    answer = served.login("not-the-key")
    assert answer.status_code == 401
    assert "Wrong API key" in answer.text and "<form" in answer.text
    assert "set-cookie" not in answer.headers


def test_the_right_key_sets_a_strict_http_only_cookie_that_opens_the_page(served: Served) -> None:
    answer = served.login()
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/"
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ui" in cookie
    assert KEY not in answer.headers["set-cookie"]  # a derived token, not the key
    with served.cookie_client() as client:
        page = client.get("/ui/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        snapshot = first_event(client)
        assert sorted(m["model"] for m in snapshot["models"]) == ["alpha", "beta"]
        assert [g["gpu"] for g in snapshot["gpus"]] == [0]


def test_the_cookie_does_not_open_the_api_and_actions_keep_their_guard(served: Served) -> None:
    with served.cookie_client() as client:
        for path in ("/v1/models", "/metrics"):
            answer = client.get(path)
            assert answer.status_code == 401, path
            assert answer.json()["error"]["code"] == "invalid_api_key"
        # Without the page's header a load is refused, cookie or not (CSRF).
        assert client.post("/ui/api/models/beta/load").status_code == 403
    bearer = {"Authorization": f"Bearer {KEY}"}
    assert httpx.get(f"{served.base}/v1/models", headers=bearer, timeout=30).status_code == 200
    # Bearer opens /ui too (scripts and curl need no login).
    assert httpx.get(f"{served.base}/ui/", headers=bearer, timeout=30).status_code == 200


def test_metrics_give_the_total_of_a_gpu_that_holds_no_lease(served: Served) -> None:
    bearer = {"Authorization": f"Bearer {KEY}"}
    text = httpx.get(f"{served.base}/metrics", headers=bearer, timeout=30).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert not any(name == "mlsup_lease_vram_bytes" for name, _ in samples)  # nothing loaded
    assert samples[("mlsup_gpu_memory_total_bytes", (("gpu", "0"),))] == 1000 << 20
    assert samples[("mlsup_gpu_memory_leased_bytes", (("gpu", "0"),))] == 0
    # The supervisor's [queues] join the gateway's /metrics (no job yet: every state 0).
    assert samples[("mlsup_queue_jobs", (("queue", "digest"), ("state", "waiting")))] == 0


def test_a_browser_logs_in_and_sees_the_models_table(browser: Any, served: Served) -> None:
    browser.delete_all_cookies()
    browser.get(f"{served.base}/ui/")
    field = wait(browser, lambda p: p.find_element(By.ID, "key"))
    field.send_keys(KEY)
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait(browser, lambda p: p.find_element(By.ID, "conn").text == "live")
    rows = wait(browser, lambda p: p.find_elements(By.CSS_SELECTOR, "#models tbody tr"))
    assert sorted(r.get_attribute("data-model") for r in rows) == ["alpha", "beta"]
    gpu = browser.find_element(By.CSS_SELECTOR, '.gpu[data-gpu="0"]')
    assert "1000 MB" in gpu.text


def test_the_page_shows_latency_percentiles_of_gateway_requests(served: Served) -> None:
    bearer = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=served.base, headers=bearer, timeout=60) as client:
        for _ in range(3):
            answer = client.post("/v1/embeddings", json={"model": "beta", "input": ["x"]})
            assert answer.status_code == 200, answer.text  # probe vectors, in OpenAI's shape
        with client.stream("GET", "/ui/events") as stream:
            for line in stream.iter_lines():  # a new snapshot whenever the page would change
                if not line.startswith("data: "):
                    continue
                snapshot = json.loads(line[len("data: ") :])
                beta = next(m for m in snapshot["models"] if m["model"] == "beta")["activity"]
                if beta["p50_ms"] is not None:
                    break
    assert beta["latency_measured"] is True
    assert 0 < beta["p50_ms"] <= beta["p99_ms"]
    alpha = next(m for m in snapshot["models"] if m["model"] == "alpha")["activity"]
    assert alpha["latency_measured"] is False  # the gateway never served it


def test_an_open_event_stream_does_not_hold_up_stop(served: Served) -> None:
    """Last in the module: it stops the supervisor while the page's stream is open."""
    with served.cookie_client() as client, client.stream("GET", "/ui/events") as stream:
        assert next(line for line in stream.iter_lines() if line.startswith("data: "))
        assert served.supervisor.stop() == 0
    output = served.supervisor.output()
    assert "killing it" not in output, output[-3000:]  # the gateway ended within its grace
