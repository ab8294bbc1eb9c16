"""The supervisor's typed contracts with real processes: status rows that count what the worker
served, typed exit reasons, and malformed control requests answered with ProtocolError."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlsup.contracts import ExitReason, ModelStatus, from_wire
from mlsup.errors import ModelNotFound, ProtocolError
from mlsup.ipc.shm import sweep_orphans
from mlsup.testing.redis import TestRedis
from mlsup.testing.supervisor import RunningSupervisor, manifest

from .test_supervisor import PROBE


@pytest.fixture
def supervisor(
    tmp_path: Path, redis_server: TestRedis, redis_prefix: str
) -> Iterator[RunningSupervisor]:
    # A heartbeat interval far longer than the test: only the report a worker sends after
    # serving a call can bring the count to the supervisor in time.
    config = manifest(redis_server.url, redis_prefix, PROBE, heartbeat_s=600)
    running = RunningSupervisor(tmp_path, config).start()
    yield running
    running.stop()
    sweep_orphans()


def _cli_status(supervisor: RunningSupervisor) -> list[dict[str, object]]:
    env = {**os.environ, "MLSUP_RUNTIME_DIR": str(supervisor.runtime)}
    out = subprocess.run(
        [sys.executable, "-m", "mlsup", "status", "--json"],
        capture_output=True, text=True, env=env, check=True, timeout=60,
    )  # fmt: skip
    rows: list[dict[str, object]] = json.loads(out.stdout)
    return rows


def test_status_counts_the_requests_the_worker_served(supervisor: RunningSupervisor) -> None:
    with supervisor.client(timeout=60) as client:
        model = client.model("probe")
        assert supervisor.row("probe")["requests"] == 0
        model.embed(["a cat", "a kitten"])
        assert model.complete("hello") is not None
        assert model.run({"x": 1}) == {"x": 1}
        row = supervisor.wait_for("probe", lambda r: r["requests"] >= 3, timeout=20)
        assert row["requests"] == 3
        typed = from_wire(row, ModelStatus)
        assert (typed.model, typed.state, typed.requests) == ("probe", "ready", 3)
        cli = next(r for r in _cli_status(supervisor) if r["model"] == "probe")
        assert cli["requests"] == 3
        model.run({"y": 2})
        assert supervisor.wait_for("probe", lambda r: r["requests"] >= 4)["requests"] == 4


def test_exit_reasons_are_typed_and_a_fresh_worker_counts_from_zero(
    supervisor: RunningSupervisor,
) -> None:
    with supervisor.client(timeout=60) as client:
        client.model("probe").run({"x": 1})
        supervisor.wait_for("probe", lambda r: r["requests"] == 1)
        row = client.unload("probe")
        assert row["state"] == "unloaded" and row["exit_reason"] == ExitReason.UNLOAD
        assert row["exit_code"] == 0 and row["reason"] == "unloaded on request"
        loaded = client.load("probe")
        assert loaded["state"] == "ready" and loaded["requests"] == 0
        assert loaded["generation"] == row["generation"] + 1


@pytest.mark.parametrize(
    ("op", "args", "field"),
    [
        ("load", {"model": "probe", "wait": "yes"}, "$.wait"),
        ("load", {"model": "probe", "priority": "urgent"}, "$.priority"),
        ("load", {"model": "probe", "timeout": "soon"}, "$.timeout"),
        ("load", {"model": "probe", "colour": "red"}, "colour"),
        ("load", ["probe"], "object"),
        ("unload", {"model": 3}, "$.model"),
        ("worker.heartbeat", {"model": "probe"}, "generation"),
    ],
)
def test_malformed_control_requests_are_protocol_errors_and_change_nothing(
    supervisor: RunningSupervisor, op: str, args: object, field: str
) -> None:
    with supervisor.client() as client:
        before = supervisor.row("probe")
        with pytest.raises(ProtocolError, match="malformed") as info:
            client.request(op, args)
        assert field in str(info.value)
        after = supervisor.row("probe")
        assert (after["state"], after["generation"]) == (before["state"], before["generation"])
        with pytest.raises(ModelNotFound):
            client.request("unload", {"model": "nope"})
        assert client.ping()["pid"] == supervisor.pid
