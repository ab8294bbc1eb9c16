"""Issue 14's supervisor half, with real supervisors, workers, signals and Redis: FAILED stays
failed, a second detached start fails, a restart releases the dead one's leases, workers never
outlive their supervisor, a hung worker is replaced."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from mlsup.errors import MlsupError, ModelFailed
from mlsup.kit.vram_usage import FAKE_VRAM_ENV
from mlsup.process_identity import start_token
from mlsup.testing.redis import TestRedis
from mlsup.testing.vram import set_vram

from .supervisor_helpers import manifest
from .test_supervisor import PROBE, leases_under

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


def test_a_workers_process_is_recorded_on_its_lease_as_a_user(
    supervisors: Any, redis_server: TestRedis, redis_prefix: str
) -> None:
    # The supervisor owns the lease; the worker uses the VRAM. A lease is reaped only once
    # both are dead, so that a worker outliving a SIGKILLed supervisor never runs unleased.
    supervisor = supervisors(manifest(redis_server.url, redis_prefix, PROBE))
    with supervisor.client(timeout=30) as client:
        loaded = client.load("probe")
    raw = redis_server.client()
    try:
        users = raw.hget(f"{redis_prefix}lease:{loaded['lease_id']}", "users")
    finally:
        raw.close()
    assert users is not None and users.decode() == f"{loaded['pid']}:{start_token(loaded['pid'])}"


def _gone_within(pids: list[int], bound_s: float) -> list[int]:
    """The pids still running after waiting up to bound_s for them to end (polling, not
    timing: the bound is generous)."""
    deadline = time.monotonic() + bound_s
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if psutil.pid_exists(pid) and not _zombie(pid)]
        time.sleep(0.01)
    return alive


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_workers_and_the_template_end_with_a_sigkilled_supervisor(
    supervisors: Any, redis_server: TestRedis, redis_prefix: str
) -> None:
    # A heartbeat far longer than the wait below: only the lifeline can end them in time.
    config = manifest(redis_server.url, redis_prefix, PROBE, heartbeat_s=60)
    supervisor = supervisors(config)
    with supervisor.client(timeout=30) as client:
        worker = client.load("probe")["pid"]
    template = psutil.Process(worker).ppid()
    assert template != supervisor.pid and psutil.Process(template).ppid() == supervisor.pid
    os.kill(supervisor.pid, signal.SIGKILL)
    started = time.monotonic()
    for pid, name in ((worker, "worker"), (template, "template")):
        assert _gone_within([pid], bound_s=5) == [], f"the {name} outlived its supervisor"
        print(f"{name} gone {time.monotonic() - started:.3f} s after the supervisor's SIGKILL")
    supervisor.process.wait()


def test_a_worker_whose_lease_goes_unrenewed_serves_nothing_after_its_expiry(
    supervisors: Any, redis_server: TestRedis, redis_prefix: str
) -> None:
    supervisor = supervisors(manifest(redis_server.url, redis_prefix, PROBE))
    raw = redis_server.client()
    with supervisor.client(timeout=30) as client:
        row = client.load("probe")
        model = client.model("probe", timeout=2)
        assert model.run({"n": 0}) == {"n": 0}
        os.kill(supervisor.pid, signal.SIGSTOP)  # alive, but it renews nothing any more
        try:
            served = 0
            while True:
                try:
                    model.run({"n": served})
                except MlsupError:
                    break  # refused, or the worker is gone: nothing served from here
                answered_ms = _redis_ms(raw)
                expiry = raw.zscore(f"{redis_prefix}gpu:0:leases", row["lease_id"])
                assert expiry is not None and answered_ms < expiry, "served without a lease"
                served += 1
            assert served > 0  # it served while the lease was good
            assert _gone_within([row["pid"]], bound_s=30) == []
        finally:
            os.kill(supervisor.pid, signal.SIGCONT)
            raw.close()
    log = (supervisor.runtime / "logs" / "probe.log").read_text()
    assert "stopped serving: its lease went unrenewed" in log


def _redis_ms(raw: Any) -> int:
    seconds, micros = raw.time()
    return int(seconds) * 1000 + int(micros) // 1000


HUNG_FAST = {"heartbeat_s": 0.2, "heartbeat_misses": 5}  # hung after 1 s silent and idle


def test_a_stopped_worker_is_killed_and_replaced_as_hung(
    supervisors: Any, redis_server: TestRedis, redis_prefix: str
) -> None:
    supervisor = supervisors(manifest(redis_server.url, redis_prefix, PROBE, **HUNG_FAST))
    with supervisor.client(timeout=30) as client:
        stopped = client.load("probe")["pid"]
        os.kill(stopped, signal.SIGSTOP)  # a deadlock, a runtime stuck in C: silent and idle
        row = supervisor.wait_for("probe", lambda r: r["state"] == "ready" and r["pid"] != stopped)
        assert row["exit_reason"] == "hung" and row["restarts"] == 1
        assert row["reason"].startswith("hung: no heartbeat and no CPU use for")
        assert _gone_within([stopped], bound_s=5) == []
        assert client.model("probe", timeout=30).run({"after": 1}) == {"after": 1}
    assert "probe: hung (no heartbeat and no CPU use" in supervisor.output()


def test_a_long_call_that_holds_the_gil_is_not_taken_for_a_hang(
    supervisors: Any, redis_server: TestRedis, redis_prefix: str
) -> None:
    supervisor = supervisors(manifest(redis_server.url, redis_prefix, PROBE, **HUNG_FAST))
    with supervisor.client(timeout=30) as client:
        pid = client.load("probe")["pid"]
        # Silent for 3 s (three times the hang threshold), but computing all along.
        assert client.model("probe", timeout=60).run({"hold_gil": 3}) == {"hold_gil": 3}
        row = supervisor.row("probe")
    assert row["pid"] == pid and row["restarts"] == 0 and row["state"] == "ready"
    assert "hung" not in supervisor.output()


def test_a_worker_using_more_vram_than_its_lease_is_re_leased_at_its_peak(
    supervisors: Any,
    redis_server: TestRedis,
    redis_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reading = tmp_path / "vram.json"
    monkeypatch.setenv(FAKE_VRAM_ENV, str(reading))  # the supervisor's NVML, simulated
    config = manifest(
        redis_server.url, redis_prefix, PROBE, vram_over_margin_mb=50, vram_over_for_s=0.5
    )
    supervisor = supervisors(config)
    with supervisor.client(timeout=30) as client:
        greedy = client.load("probe")["pid"]  # a 200 MB lease
        set_vram(reading, {greedy: 480})
        row = supervisor.wait_for("probe", lambda r: r["state"] == "ready" and r["pid"] != greedy)
        assert row["exit_reason"] == "oom" and row["leased_mb"] == 480
        assert row["reason"].startswith("oom: used 480 MB of VRAM on a 200 MB lease for")
        assert [lease["mb"] for lease in leases_under(redis_server, redis_prefix)] == [480]
        assert client.model("probe", timeout=30).run({"after": 1}) == {"after": 1}
    assert "probe: re-leasing 480 MB, the peak it used" in supervisor.output()
