"""The example feature runner as a real uvicorn server process: the real Redis, the packaged
SmolLM2, httpx as the client; leases checked in Redis as ``redis-cli ZRANGE`` would see them."""

from __future__ import annotations

import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mlsup.kit.leases import GPUBoss
from mlsup.kit.leases.keys import LeaseKeys
from mlsup.testing.redis import TestRedis

from .service_helpers import (
    FEATURE_RUNNER,
    free_port,
    runner_config,
    start_runner,
    stop,
    wait_health,
    wait_listening,
)

HELLO = {"messages": [{"role": "user", "content": "Hello"}]}
#: The example manifest's simulated GPU 0.
CAPACITY_MB = 16000


@pytest.fixture
def config(tmp_path: Path, redis_server: TestRedis, redis_prefix: str) -> Path:
    return runner_config(tmp_path, FEATURE_RUNNER / "mlsup.toml", redis_server.url, redis_prefix)


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def runners() -> Iterator[list]:
    started: list = []
    yield started
    for proc in started:
        stop(proc)


def leases(redis_server: TestRedis, prefix: str) -> list[tuple[str, str, int]]:
    """(model id, owner pid, MB) of every lease in ``gpu:0:leases`` under ``prefix``."""
    keys, client = LeaseKeys(prefix), redis_server.client()
    try:
        found = []
        for raw in client.zrange(keys.leases(0), 0, -1):
            fields = client.hgetall(keys.lease(raw.decode()))
            found.append(
                (fields[b"model_id"].decode(), fields[b"pid"].decode(), int(fields[b"vram_mb"]))
            )
        return found
    finally:
        client.close()


def boss_on(redis_server: TestRedis, prefix: str) -> GPUBoss:
    """Another process's boss, with the runner's devices (the same [[devices]] as its manifest:
    every process must agree on a GPU's capacity)."""
    return GPUBoss(redis_server.url, prefix, [{"index": 0, "memory_mb": CAPACITY_MB}])


async def test_health_loading_then_ok_chat_lease_and_sigterm(
    config: Path, port: int, runners: list, redis_server: TestRedis, redis_prefix: str
) -> None:
    base = f"http://127.0.0.1:{port}"
    # Hold the whole GPU first: the runner's preload then waits for its lease, so "loading"
    # is observed for certain, not by luck of timing.
    blocker = boss_on(redis_server, redis_prefix)
    lease = await blocker.acquire(CAPACITY_MB, "blocker", gpu=0)
    proc = start_runner(config, port)
    runners.append(proc)
    first = wait_listening(proc, f"{base}/health")
    assert first.status_code == 503
    assert first.json() == {"status": "loading", "model_loaded": False}
    await blocker.release(lease)
    await blocker.close()
    assert wait_health(proc, base, 200) == {"status": "ok", "model_loaded": True}

    answer = httpx.post(f"{base}/chat", json=HELLO, timeout=120)
    assert answer.status_code == 200, answer.text
    assert isinstance(answer.json()["content"], str) and answer.json()["content"].strip()
    assert leases(redis_server, redis_prefix) == [("my-model", str(proc.pid), 8000)]

    proc.send_signal(signal.SIGTERM)
    out = stop(proc) if proc.wait(timeout=60) is not None else ""
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert proc.returncode in (0, -signal.SIGTERM), out
    assert leases(redis_server, redis_prefix) == []


@pytest.mark.parametrize("where", ["nearest", "services_root"])
def test_python_dash_m_serves_on_the_port_its_services_yaml_declares(
    config: Path, port: int, runners: list, tmp_path: Path, where: str
) -> None:
    # The runner's package, as its entrypoint directory holds it, with the services.yaml there
    # ("nearest") or only under $MLSUP_SERVICES_ROOT.
    entrypoint = tmp_path / "runner"
    shutil.copytree(FEATURE_RUNNER / "kv_ml_runner", entrypoint / "kv_ml_runner")
    declared = (FEATURE_RUNNER / "services.yaml").read_text().replace("41234", str(port))
    root = tmp_path / "features" / "knowledge-verification"
    root.mkdir(parents=True)
    (entrypoint if where == "nearest" else root).joinpath("services.yaml").write_text(declared)
    proc = start_runner(
        config,
        None,
        cwd=entrypoint,
        MLSUP_SERVICES_ROOT=str(tmp_path / "features"),
    )
    runners.append(proc)
    base = f"http://127.0.0.1:{port}"
    assert wait_health(proc, base, 200) == {"status": "ok", "model_loaded": True}
    answer = httpx.post(f"{base}/chat", json=HELLO, timeout=120)
    assert answer.status_code == 200 and answer.json()["content"].strip(), answer.text


async def test_a_killed_runners_lease_is_reclaimed_at_once_by_the_next_acquirer(
    config: Path, port: int, runners: list, redis_server: TestRedis, redis_prefix: str
) -> None:
    proc = start_runner(config, port)
    runners.append(proc)
    wait_health(proc, f"http://127.0.0.1:{port}", 200)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert [m for m, _, _ in leases(redis_server, redis_prefix)] == ["my-model"]  # left behind
    boss = boss_on(redis_server, redis_prefix)
    try:
        # The whole GPU, well within the lease TTL: granted only because the dead owner's
        # lease is reaped on sight (same host, pid gone), not after it expires.
        lease = await boss.acquire(CAPACITY_MB, "next", gpu=0, timeout=2.0)
        assert leases(redis_server, redis_prefix) == [("next", str(boss.owner.pid), CAPACITY_MB)]
        await boss.release(lease)
    finally:
        await boss.close()


def test_idle_shutdown_exits_0_and_releases_the_lease(
    config: Path, port: int, runners: list, redis_server: TestRedis, redis_prefix: str
) -> None:
    proc = start_runner(config, port, KV_IDLE_SHUTDOWN_S="1")
    runners.append(proc)
    wait_health(proc, f"http://127.0.0.1:{port}", 200)  # probes do not keep it awake
    assert proc.wait(timeout=120) == 0, stop(proc)
    out = stop(proc)
    assert "idle for 1 s: shutting down" in out
    assert leases(redis_server, redis_prefix) == []


def test_a_failing_startup_fails_the_server_and_leaves_no_lease(
    tmp_path: Path, port: int, runners: list, redis_server: TestRedis, redis_prefix: str
) -> None:
    template = tmp_path / "broken.toml"
    template.write_text(
        (FEATURE_RUNNER / "mlsup.toml").read_text().replace("smollm2.gguf", "missing.gguf")
    )
    config = runner_config(tmp_path, template, redis_server.url, redis_prefix)
    proc = start_runner(config, port)
    runners.append(proc)
    assert proc.wait(timeout=120) != 0
    out = stop(proc)
    assert "startup failed: ModelLoadError" in out and "missing.gguf" in out
    assert leases(redis_server, redis_prefix) == []


@pytest.fixture
def running(config: Path, port: int, runners: list) -> str:
    proc = start_runner(config, port)
    runners.append(proc)
    base = f"http://127.0.0.1:{port}"
    wait_health(proc, base, 200)
    return base


@pytest.mark.parametrize(
    "body",
    [
        {"messages": "Hello"},
        {"messages": []},
        {"messages": [{"role": "robot", "content": "hi"}]},
        {**HELLO, "temperature": 7},
        {**HELLO, "max_tokens": 8},  # Pattern 1's infer(text) takes no options
    ],
)
def test_bad_bodies_get_422_json_and_the_server_keeps_serving(running: str, body: dict) -> None:
    answer = httpx.post(f"{running}/chat", json=body, timeout=30)
    assert answer.status_code == 422
    assert answer.json()["error"]["type"] == "InvalidRequest", answer.text
    assert answer.json()["error"]["message"]
    assert httpx.get(f"{running}/health", timeout=5).json()["status"] == "ok"


def test_not_json_and_unknown_routes_get_json_errors(running: str) -> None:
    garbled = httpx.post(
        f"{running}/chat", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert garbled.status_code == 422 and garbled.json()["error"]["type"] == "InvalidRequest"
    missing = httpx.get(f"{running}/nowhere")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "HTTPError"
    wrong = httpx.get(f"{running}/chat")
    assert wrong.status_code == 405 and "error" in wrong.json()


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("http://localhost:3000", True),
        ("http://127.0.0.1:5173", True),
        ("https://evil.example", False),
        ("http://localhost.evil.example", False),
    ],
)
def test_cors_preflight(running: str, origin: str, allowed: bool) -> None:
    answer = httpx.options(
        f"{running}/chat",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert (answer.headers.get("access-control-allow-origin") == origin) is allowed
    assert answer.status_code == (200 if allowed else 400)
