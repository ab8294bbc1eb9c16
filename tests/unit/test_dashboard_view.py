"""The dashboard's view model: status rows and the GPU listing joined into what the page shows,
and the badge a person reads for each supervisor state (pure)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from mlsup.dashboard.activity import ModelActivity
from mlsup.dashboard.view import Badge, ModelRow, badge, build_view, read_row

IDLE = ModelActivity(rps=None, series=(0.0,), p50_ms=None, p99_ms=None, latency_measured=False)


def status_row(model: str, state: str = "ready", **fields: Any) -> dict[str, Any]:
    """A row as the supervisor's ``status`` control operation sends it."""
    row: dict[str, Any] = {
        "model": model,
        "loader": "probe",
        "state": state,
        "stage": "",
        "pid": 4242 if state == "ready" else None,
        "endpoint": None,
        "generation": 1,
        "gpu": 0 if state == "ready" else None,
        "leased_mb": 300 if state == "ready" else None,
        "lease_id": f"lease-{model}" if state == "ready" else None,
        "measured_mb": 120 if state == "ready" else None,
        "restarts": 0,
        "requests": 7,
        "idle_s": 3.7 if state == "ready" else None,
        "priority": "normal",
        "exit_code": None,
        "last_exit": None,
        "reason": None,
        "error": None,
        "timeline": {},
    }
    row.update(fields)
    return row


def lease(lease_id: str, model: str, vram_mb: int, **fields: Any) -> dict[str, Any]:
    entry = {
        "id": lease_id,
        "gpu": 0,
        "model_id": model,
        "vram_mb": vram_mb,
        "priority": "normal",
        "owner": "host:100",
        "pid": 100,
        "host": "host",
        "epoch": 1,
        "age_s": 1.0,
        "expires_in_s": 9.0,
        "preempt_in_s": None,
    }
    entry.update(fields)
    return entry


def gpu(index: int, capacity: int, leases: list[dict[str, Any]], waiting: Any = ()) -> Any:
    return {"gpu": index, "capacity_mb": capacity, "leases": leases, "waiting": list(waiting)}


def view(rows: list[dict[str, Any]], gpus: list[Any], problem: str | None = None) -> Any:
    return build_view(
        [read_row(r) for r in rows],
        gpus,
        lambda model: IDLE,
        supervisor="/run/x",
        problem=problem,
        window_s=300.0,
        step_s=10.0,
    )


def test_read_row_takes_the_error_message_and_the_timeline() -> None:
    error = {"type": "ModelFailed", "message": "crashed 3 times", "context": {}}
    row = read_row(status_row("m", "failed", error=error, timeline={"exited": 5}))
    assert row.error == "crashed 3 times"
    assert row.timeline == {"exited": 5.0}


def test_segments_join_leases_to_their_models_and_mark_other_processes() -> None:
    rows = [status_row("chat")]
    other = lease("kit-1", "embedder", 200, pid=777, owner="host:777", priority="high")
    result = view(rows, [gpu(0, 1000, [lease("lease-chat", "chat", 300), other])])
    bar = result.gpus[0]
    assert (bar.used_mb, bar.free_mb, bar.free_share) == (500, 500, 0.5)
    ours, theirs = bar.segments
    assert ours.supervised and ours.measured_mb == 120 and ours.worker_pid == 4242
    assert ours.share == pytest.approx(0.3)
    assert not theirs.supervised and theirs.measured_mb is None and theirs.worker_pid is None
    assert (theirs.model, theirs.priority, theirs.pid) == ("embedder", "high", 777)


def test_waiters_and_pending_preemptions_are_shown() -> None:
    waiting = [{"id": "w1", "vram_mb": 900, "priority": "critical"}]
    victim = lease("v", "old", 800, preempt_in_s=2.345)
    bar = view([], [gpu(0, 1000, [victim], waiting)]).gpus[0]
    assert bar.segments[0].preempt_in_s == 2.3
    assert [(w.id, w.vram_mb, w.priority) for w in bar.waiting] == [("w1", 900, "critical")]


def test_gpus_are_ordered_and_an_empty_gpu_is_all_free() -> None:
    result = view([], [gpu(1, 800, []), gpu(0, 1000, [])])
    assert [g.gpu for g in result.gpus] == [0, 1]
    assert result.gpus[1].free_share == 1.0 and result.gpus[1].segments == ()


def test_over_committed_gpu_never_shows_negative_free() -> None:
    bar = view([], [gpu(0, 100, [lease("a", "a", 150)])]).gpus[0]
    assert bar.free_mb == 0 and bar.free_share == 0.0


@pytest.mark.parametrize(
    ("state", "timeline", "expected"),
    [
        ("unloaded", {}, Badge.UNLOADED),
        ("leasing", {}, Badge.LOADING),
        ("starting", {"ready": 5.0, "unloaded": 9.0}, Badge.LOADING),
        ("ready", {"exited": 3.0, "ready": 4.0}, Badge.READY),
        ("draining", {}, Badge.DRAINING),
        ("backoff", {"exited": 3.0}, Badge.RESTARTING),
        # Brought back after its worker died, not loaded on request:
        ("leasing", {"ready": 2.0, "exited": 3.0}, Badge.RESTARTING),
        ("starting", {"ready": 2.0, "exited": 3.0}, Badge.RESTARTING),
        # Crashed long ago, unloaded since, now loaded on request:
        ("starting", {"exited": 3.0, "ready": 4.0, "unloaded": 6.0}, Badge.LOADING),
        ("failed", {"exited": 3.0}, Badge.FAILED),
    ],
)
def test_badges(state: str, timeline: dict[str, float], expected: Badge) -> None:
    row = read_row(status_row("m", state, timeline=timeline))
    assert badge(row) is expected


@pytest.mark.parametrize(
    ("state", "can_load", "can_unload"),
    [
        ("unloaded", True, False),
        ("failed", True, False),
        ("leasing", False, True),
        ("ready", False, True),
        ("draining", False, False),
    ],
)
def test_buttons_follow_the_state(state: str, can_load: bool, can_unload: bool) -> None:
    line = view([status_row("m", state)], []).models[0]
    assert (line.can_load, line.can_unload) == (can_load, can_unload)


def test_a_model_waiting_for_its_lease_says_so() -> None:
    line = view([status_row("m", "leasing")], []).models[0]
    assert line.stage == "waiting for a VRAM lease"
    starting = view([status_row("m", "starting", stage="loading weights")], []).models[0]
    assert starting.stage == "loading weights"


def test_idle_time_is_whole_seconds_so_frames_change_at_most_once_a_second() -> None:
    assert view([status_row("m")], []).models[0].idle_s == 3


def test_the_view_encodes_to_json_with_badge_names() -> None:
    result = view([status_row("m", "backoff", timeline={"exited": 1.0})], [], problem="p")
    data = msgspec.json.decode(msgspec.json.encode(result))
    assert data["problem"] == "p"
    assert data["models"][0]["badge"] == "restarting"
    assert data["models"][0]["activity"]["latency_measured"] is False


def test_model_row_is_the_one_reader() -> None:
    # Unknown extra fields in a row are ignored; missing optional ones default.
    row = read_row({"model": "m", "state": "unloaded", "future_field": 1})
    assert isinstance(row, ModelRow)
    assert (row.requests, row.restarts, row.timeline) == (0, 0, {})
