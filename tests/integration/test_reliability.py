"""Issue 14's supervisor half, with real supervisors, workers, signals and Redis: FAILED stays
failed, a second detached start fails, a restart releases the dead one's leases, workers never
outlive their supervisor, a hung worker is replaced."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from mlsup.errors import ModelFailed
from mlsup.testing.redis import TestRedis

from .supervisor_helpers import manifest
from .test_supervisor import PROBE, leases_under, supervisors

__all__ = ["supervisors"]  # the fixture, shared with test_supervisor

CRASHY = PROBE.replace("[models.probe]", "[models.crashy]") + "options = { crash_on_load = true }\n"


def test_implicit_loads_leave_a_failed_model_parked(
    supervisors: Any, redis_server: TestRedis, redis_prefix: str
) -> None:
    supervisor = supervisors(manifest(redis_server.url, redis_prefix, CRASHY))
    with supervisor.client(timeout=30) as client:
        with pytest.raises(ModelFailed, match="crashed 3 times"):
            client.load("crashy")
        parked = supervisor.row("crashy")
        model = client.model("crashy")
        for _ in range(5):  # callers keep calling: none of them revives the crash loop
            with pytest.raises(ModelFailed, match="parked") as refused:
                model.run({"x": 1})
            assert "crashed 3 times" in refused.value.message
            assert "mlsup load crashy" in refused.value.message
            assert 0 < refused.value.context["retry_in_s"] <= 300
        row = supervisor.row("crashy")
        assert row["state"] == "failed" and row["generation"] == parked["generation"]
        assert row["restarts"] == parked["restarts"]
        with pytest.raises(ModelFailed, match="crashed 3 times"):  # explicit: tries again
            client.load("crashy")
        assert supervisor.row("crashy")["generation"] > parked["generation"]


def test_after_the_cool_down_a_caller_may_try_a_failed_model_again(
    supervisors: Any, redis_server: TestRedis, redis_prefix: str
) -> None:
    config = manifest(redis_server.url, redis_prefix, CRASHY, restart_failed_cooldown_s=0)
    supervisor = supervisors(config)
    with supervisor.client(timeout=30) as client:
        with pytest.raises(ModelFailed, match="crashed 3 times"):
            client.load("crashy")
        parked = supervisor.row("crashy")
        with pytest.raises(ModelFailed, match="crashed 3 times"):
            client.model("crashy").run({"x": 1})
    assert supervisor.row("crashy")["generation"] > parked["generation"]


def test_a_second_start_detached_or_not_fails_with_the_same_message(
    supervisors: Any, redis_server: TestRedis, redis_prefix: str
) -> None:
    first = supervisors(manifest(redis_server.url, redis_prefix, PROBE))
    env = {**os.environ, "MLSUP_RUNTIME_DIR": str(first.runtime)}
    command = [sys.executable, "-m", "mlsup", "start", "--config", str(first.config)]
    runs = [
        subprocess.run(
            [*command, *detach], capture_output=True, text=True, env=env, timeout=120, check=False
        )
        for detach in ((), ("--detach",))
    ]
    foreground, detached = runs
    assert foreground.returncode == detached.returncode == 1
    assert f"a supervisor (pid {first.pid}) is already running" in detached.stderr
    assert detached.stderr == foreground.stderr and detached.stdout == ""
    assert first.process.poll() is None and first.row("probe")["state"] == "unloaded"


def test_a_quick_restart_releases_the_dead_supervisors_leases_at_start(
    supervisors: Any, redis_server: TestRedis, redis_prefix: str
) -> None:
    config = manifest(redis_server.url, redis_prefix, PROBE)
    first = supervisors(config)
    with first.client(timeout=30) as client:
        lease_id = client.load("probe")["lease_id"]
    assert [lease["model"] for lease in leases_under(redis_server, redis_prefix)] == ["probe"]
    first.kill()
    second = supervisors(config)
    # Released by the new supervisor (no tombstone), not reaped later by whoever looks.
    raw = redis_server.client()
    try:
        assert not raw.exists(f"{redis_prefix}lease:{lease_id}")
        assert not raw.exists(f"{redis_prefix}lease:{lease_id}:gone")
    finally:
        raw.close()
    assert f"released lease {lease_id} of probe (200 MB on GPU 0)" in second.output()
    with second.client() as client:
        assert client.leases() == []
