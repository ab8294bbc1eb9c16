"""The supervisor as a user runs it: a real process, real workers, real Redis, real models."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from mlsup.bench.supervised import probe_model
from mlsup.errors import (
    LeaseTimeout,
    ModelFailed,
    ModelNotFound,
    ProtocolError,
    SupervisorUnavailable,
    WorkerCrashed,
)
from mlsup.ipc.liveness import process_alive
from mlsup.ipc.wire import Kind, decode
from mlsup.kit.leases import SyncGPUBoss
from mlsup.kit.loaders import ONNXLoader
from mlsup.kit.worker_runtime import template_additions
from mlsup.proxy import SupervisorProxy
from mlsup.testing.loaders import ProbeModel
from mlsup.testing.redis import TestRedis
from mlsup.testing.tiny_models import tiny_onnx

from .supervisor_helpers import PREEMPTION_MODELS, manifest

PROBE = probe_model("probe", vram_mb=200, idle_timeout_s=0)


def leases_under(redis_server: TestRedis, prefix: str) -> list[dict[str, Any]]:
    boss = SyncGPUBoss(redis_server.url, prefix)
    try:
        return [
            {"model": lease.model_id, "mb": lease.vram_mb, "pid": lease.pid}
            for usage in boss.snapshot().values()
            for lease in usage.leases
        ]
    finally:
        boss.close()


def test_start_load_infer_status_stop(
    supervisors: Any, redis_server: TestRedis, redis_prefix: str
) -> None:
    onnx = tiny_onnx()
    models = PROBE + f'\n[models.mlp]\nloader = "onnx"\npath = "{onnx}"\nvram_mb = 100\n'
    supervisor = supervisors(manifest(redis_server.url, redis_prefix, models))
    with supervisor.client() as client:
        assert {row["state"] for row in client.status()} == {"unloaded"}
        vectors = client.model("probe").embed(["a", "b"])
        np.testing.assert_array_equal(vectors, ProbeModel(8).embed(["a", "b"]))
        x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
        supervised = client.model("mlp").run({"x": x})["y"]
        in_process = ONNXLoader().load(onnx).run({"x": x})["y"]
        np.testing.assert_array_equal(supervised, in_process)
        rows = {row["model"]: row for row in client.status()}
    assert rows["probe"]["state"] == rows["mlp"]["state"] == "ready"
    assert rows["probe"]["leased_mb"] == 200 and rows["probe"]["gpu"] == 0
    assert rows["mlp"]["measured_mb"] > 0
    pids = [rows["probe"]["pid"], rows["mlp"]["pid"]]
    # Workers run their thread pools as mlsup.kit.worker_runtime says (the template's env).
    expected = template_additions(os.environ)
    for pid in pids:
        environ = dict(
            line.split(b"=", 1) for line in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if b"=" in line
        )  # fmt: skip
        assert {k: environ.get(k.encode(), b"").decode() for k in expected} == expected
    assert {lease["model"] for lease in leases_under(redis_server, redis_prefix)} == {
        "probe",
        "mlp",
    }
    assert supervisor.stop() == 0
    assert not any(process_alive(pid) for pid in pids)
    assert leases_under(redis_server, redis_prefix) == []
    assert not list(supervisor.runtime.glob("*.sock"))
    assert not [n for n in os.listdir("/dev/shm") if any(n.startswith(f"mlsup-{p}-") for p in pids)]


def test_sigkill_mid_request_gives_worker_crashed_then_serves(
    supervisors: Any, redis_server: TestRedis, redis_prefix: str
) -> None:
    supervisor = supervisors(manifest(redis_server.url, redis_prefix, PROBE))
    with supervisor.client() as client:
        model = client.model("probe", timeout=60)
        assert model.run({"x": 1}) == {"x": 1}
        pid = supervisor.row("probe")["pid"]
        outcome: list[BaseException] = []

        def slow_call() -> None:
            try:
                model.complete("a long answer", delay_s=30)  # not idempotent: no retry
            except BaseException as exc:
                outcome.append(exc)

        caller = threading.Thread(target=slow_call)
        caller.start()
        time.sleep(0.5)
        started = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        caller.join(10)
        assert not caller.is_alive(), "the caller hung on a dead worker"
        assert time.monotonic() - started < 5
        assert len(outcome) == 1 and isinstance(outcome[0], WorkerCrashed), outcome
        assert outcome[0].context["exit"] == "exited with signal SIGKILL"
        row = supervisor.wait_for("probe", lambda r: r["state"] == "ready")
        assert row["pid"] != pid and row["restarts"] == 1
        assert model.run({"y": 2}) == {"y": 2}


def test_a_crash_loop_ends_failed_without_a_lease(
    supervisors: Any, redis_server: TestRedis, redis_prefix: str
) -> None:
    models = (
        PROBE.replace("[models.probe]", "[models.crashy]") + "options = { crash_on_load = true }\n"
    )
    supervisor = supervisors(manifest(redis_server.url, redis_prefix, models))
    with supervisor.client() as client:
        with pytest.raises(ModelFailed, match="crashed 3 times") as failed:
            client.load("crashy")
        assert "mlsup load crashy" in str(failed.value)
        row = supervisor.row("crashy")
        assert row["state"] == "failed" and row["leased_mb"] is None
        assert leases_under(redis_server, redis_prefix) == []
        with pytest.raises(ModelFailed):  # an explicit load tries again, and fails again
            client.load("crashy")
    assert "exited with signal SIGKILL" in supervisor.output()


def test_an_injected_oom_raises_the_estimate(
    supervisors: Any, redis_server: TestRedis, redis_prefix: str
) -> None:
    models = PROBE + "options = { oom_below_mb = 290 }\n"
    supervisor = supervisors(manifest(redis_server.url, redis_prefix, models))
    with supervisor.client() as client:
        row = client.load("probe")
    assert row["state"] == "ready" and row["leased_mb"] >= 290 and row["restarts"] == 1
    assert "out of memory; re-leasing" in supervisor.output()
    assert leases_under(redis_server, redis_prefix)[0]["mb"] == row["leased_mb"]


def test_high_priority_preempts_low_on_a_full_gpu(
    supervisors: Any, redis_server: TestRedis, redis_prefix: str
) -> None:
    supervisor = supervisors(manifest(redis_server.url, redis_prefix, PREEMPTION_MODELS))
    with supervisor.client() as client:
        client.load("background")
        row = client.load("urgent", timeout=60)
        assert row["state"] == "ready"
        background = supervisor.row("background")
    assert background["state"] == "unloaded" and background["reason"] == "preempted"
    assert background["error"]["type"] == "Preempted"
    assert [lease["model"] for lease in leases_under(redis_server, redis_prefix)] == ["urgent"]


def test_idle_models_unload_and_reload_on_use(
    supervisors: Any, redis_server: TestRedis, redis_prefix: str
) -> None:
    models = PROBE.replace("idle_timeout_s = 0", "idle_timeout_s = 1")
    supervisor = supervisors(manifest(redis_server.url, redis_prefix, models))
    with supervisor.client() as client:
        model = client.model("probe")
        assert model.run({"n": 1}) == {"n": 1}
        first = supervisor.row("probe")["pid"]
        row = supervisor.wait_for("probe", lambda r: r["state"] == "unloaded", timeout=15)
        assert row["reason"].startswith("idle")
        assert leases_under(redis_server, redis_prefix) == []
        assert model.run({"n": 2}) == {"n": 2}  # loads it again
        assert supervisor.row("probe")["pid"] != first


def test_a_killed_supervisor_leaves_nothing_after_the_next_start(
    supervisors: Any, redis_server: TestRedis, redis_prefix: str
) -> None:
    config = manifest(redis_server.url, redis_prefix, PROBE)
    first = supervisors(config)
    with first.client() as client:
        client.model("probe").run({"big": np.ones(1 << 20, dtype=np.uint8)})
        worker = client.status()[0]["pid"]
    first.kill()
    second = supervisors(config)  # same runtime directory and Redis prefix
    assert not process_alive(worker)
    assert not process_alive(first.pid)
    assert [p for p in (lease["pid"] for lease in leases_under(redis_server, redis_prefix))] == []
    assert not [
        n
        for n in os.listdir("/dev/shm")
        if n.startswith((f"mlsup-{worker}-", f"mlsup-{first.pid}-"))
    ]
    with second.client() as client:
        assert client.model("probe").run({"again": 1}) == {"again": 1}


def test_two_supervisors_on_one_redis_never_overcommit(
    supervisors: Any, redis_server: TestRedis, redis_prefix: str
) -> None:
    big = PROBE.replace("vram_mb = 200", "vram_mb = 600")
    small = PROBE.replace("vram_mb = 200", "vram_mb = 300").replace(
        "[models.probe]", "[models.small]"
    )
    a = supervisors(manifest(redis_server.url, redis_prefix, big, acquire_timeout=1), name="a")
    b = supervisors(
        manifest(redis_server.url, redis_prefix, big + small, acquire_timeout=1), name="b"
    )
    with a.client() as client_a, b.client() as client_b:
        client_a.load("probe")
        with pytest.raises(LeaseTimeout):
            client_b.load("probe")  # 600 + 600 > 1000: B waits, then gives up
        client_b.load("small")
    leases = leases_under(redis_server, redis_prefix)
    assert sorted(lease["mb"] for lease in leases) == [300, 600]
    assert {lease["pid"] for lease in leases} == {a.pid, b.pid}


def test_one_supervisor_per_runtime_directory(
    supervisors: Any, redis_server: TestRedis, redis_prefix: str
) -> None:
    config = manifest(redis_server.url, redis_prefix, PROBE)
    supervisors(config)
    second = supervisors(config, wait=False)
    assert second.process is not None and second.process.wait(30) == 1
    assert "already running" in second.output()


def test_bad_requests_get_errors_and_it_keeps_serving(
    supervisors: Any, redis_server: TestRedis, redis_prefix: str
) -> None:
    supervisor = supervisors(manifest(redis_server.url, redis_prefix, PROBE))
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.RCVTIMEO, 10_000)
    sock.connect(f"ipc://{supervisor.runtime / 'supervisor.sock'}")
    try:
        sock.send_multipart([b"\x93garbage", b"x"])
        reply = decode(sock.recv_multipart())
        assert reply.kind is Kind.ERROR and reply.error is not None
        assert reply.error["type"] == ProtocolError.__name__
    finally:
        sock.close(linger=0)
    with supervisor.client() as client:
        with pytest.raises(ModelNotFound, match="known models: probe"):
            client.load("nope")
        with pytest.raises(Exception, match="not the current worker"):
            client.request("worker.ready", {"model": "probe", "token": "forged", "generation": 1})
        assert client.ping()["pid"] == supervisor.pid


def test_cli_without_a_supervisor_says_how_to_start_one(tmp_path: Path) -> None:
    env = {**os.environ, "MLSUP_RUNTIME_DIR": str(tmp_path / "rt")}
    out = subprocess.run(
        [sys.executable, "-m", "mlsup", "status"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert out.returncode == 1 and "start one with `mlsup start`" in out.stderr
    with pytest.raises(SupervisorUnavailable):
        SupervisorProxy(tmp_path / "rt")
