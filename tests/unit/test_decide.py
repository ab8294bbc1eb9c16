"""The supervisor's decisions, as a table: a model snapshot and an event in, actions out."""

from __future__ import annotations

import dataclasses
import signal

import pytest

from mlsup import defaults
from mlsup.contracts import ExitReason, WorkerExit
from mlsup.errors import LeaseLost, ModelFailed, ModelLoadError, ModelOOM, Preempted
from mlsup.supervisor.decide import (
    Action,
    Drain,
    EventIn,
    KillWorker,
    Limits,
    Log,
    MarkFailed,
    PreemptionAsked,
    RecordCrashes,
    ReleaseLease,
    RespawnAfter,
    SetEstimate,
    StopAsked,
    Tick,
    Transition,
    View,
    WorkerExited,
    decide,
    implicit_load_refused,
    over_lease_since,
)
from mlsup.supervisor.restart import RestartPolicy
from mlsup.supervisor.states import Event, ModelState

S = ModelState
LIMITS = Limits(
    restart=RestartPolicy(initial_s=0.5, factor=2, max_s=4, max_crashes=2, window_s=60),
    load_stall_timeout_s=100,
    terminate_grace_s=5,
)
NOW = 1000.0


def view(state: ModelState = S.READY, **changes: object) -> View:
    base = View(
        model="m",
        state=state,
        limits=LIMITS,
        idle_timeout_s=30,
        has_worker=True,
        estimate_mb=400,
        last_activity=NOW - 1,
        progress_at=NOW - 1,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def kinds(actions: list[Action]) -> list[type]:
    return [type(a) for a in actions]


def without_logs(actions: list[Action]) -> list[Action]:
    return [a for a in actions if not isinstance(a, Log)]


CRASHED = Transition(Event.WORKER_EXITED)
KILLED = -int(signal.SIGKILL)

# (name, snapshot, event, expected actions without Log lines)
TABLE: list[tuple[str, View, EventIn, list[Action]]] = [
    (
        "a first crash respawns at once",
        view(S.READY),
        WorkerExited(pid=7, code=KILLED),
        [CRASHED, RecordCrashes((NOW,)), RespawnAfter(0.0, ExitReason.CRASH)],
    ),
    (
        "a second crash backs off",
        view(S.READY, crash_times=(NOW - 5,)),
        WorkerExited(pid=7, code=1),
        [CRASHED, RecordCrashes((NOW - 5, NOW)), RespawnAfter(0.5, ExitReason.CRASH)],
    ),
    (
        "a crash long ago is forgotten",
        view(S.READY, crash_times=(NOW - 500, NOW - 400)),
        WorkerExited(pid=7, code=1),
        [CRASHED, RecordCrashes((NOW,)), RespawnAfter(0.0, ExitReason.CRASH)],
    ),
    (
        "a crash during a drain is the drain's",
        view(S.DRAINING),
        WorkerExited(pid=7, code=KILLED),
        [],
    ),
    (
        "out of memory (exit status) re-leases 1.5 times the larger measure",
        view(S.STARTING, estimate_mb=400, memory_mb=600),
        WorkerExited(pid=7, code=WorkerExit.OOM),
        [
            CRASHED,
            SetEstimate(int(600 * defaults.OOM_GROWTH) + 1),
            ReleaseLease(),
            RecordCrashes((NOW,)),
            RespawnAfter(0.0, ExitReason.OOM),
        ],
    ),
    (
        "out of memory (reported, then killed) also regrows",
        view(S.READY, estimate_mb=400, oom_reported=True),
        WorkerExited(pid=7, code=KILLED),
        [
            CRASHED,
            SetEstimate(601),
            ReleaseLease(),
            RecordCrashes((NOW,)),
            RespawnAfter(0.0, ExitReason.OOM),
        ],
    ),
    (
        "nothing idles while it was used recently",
        view(S.READY, last_activity=NOW - 29.9),
        Tick(),
        [],
    ),
    (
        "idle for exactly the timeout unloads (>=, as kit/idle.py)",
        view(S.READY, last_activity=NOW - 30),
        Tick(),
        [Drain(ExitReason.IDLE, "idle for 30 s")],
    ),
    (
        "idle timeout 0 never unloads",
        view(S.READY, idle_timeout_s=0, last_activity=0.0),
        Tick(),
        [],
    ),
    (
        "a starting model does not idle",
        view(S.STARTING, last_activity=0.0),
        Tick(),
        [],
    ),
    (
        "a stalled load is killed",
        view(S.STARTING, progress_at=NOW - 100),
        Tick(),
        [KillWorker(ExitReason.STALLED, "no load progress for 100 s")],
    ),
    (
        "a load still progressing is left alone",
        view(S.STARTING, progress_at=NOW - 99),
        Tick(),
        [],
    ),
    (
        "an unloaded model has nothing to do on a tick",
        view(S.UNLOADED, last_activity=0.0, lease_lost=LeaseLost("gone")),
        Tick(),
        [],
    ),
    (
        "an unload request drains",
        view(S.READY),
        StopAsked(ExitReason.UNLOAD),
        [Drain(ExitReason.UNLOAD, "unloaded on request")],
    ),
    (
        "shutdown drains a model still waiting for its lease",
        view(S.LEASING, has_worker=False),
        StopAsked(ExitReason.SHUTDOWN),
        [Drain(ExitReason.SHUTDOWN, "supervisor stopped")],
    ),
    (
        "unloading an unloaded model does nothing",
        view(S.UNLOADED),
        StopAsked(ExitReason.UNLOAD),
        [],
    ),
    (
        "a preemption of an unloaded model does nothing",
        view(S.UNLOADED),
        PreemptionAsked(remaining_s=3, requester="x"),
        [],
    ),
]


@pytest.mark.parametrize(("snapshot", "event", "expected"), [r[1:] for r in TABLE],
                         ids=[r[0] for r in TABLE])  # fmt: skip
def test_decision_table(snapshot: View, event: EventIn, expected: list[Action]) -> None:
    assert without_logs(decide(snapshot, event, NOW)) == expected


def test_too_many_crashes_mark_the_model_failed_with_the_last_exit() -> None:
    actions = decide(view(crash_times=(NOW - 2, NOW - 1)), WorkerExited(7, KILLED), NOW)
    assert kinds(without_logs(actions)) == [Transition, RecordCrashes, MarkFailed]
    failed = actions[-1]
    assert isinstance(failed, MarkFailed) and failed.reason is ExitReason.FLAPPING
    assert isinstance(failed.error, ModelFailed)
    assert failed.error.context["crashes"] == 3
    assert "SIGKILL" in failed.error.message and "mlsup load m" in failed.error.message


def test_a_load_error_fails_at_once_with_what_the_worker_reported() -> None:
    reported = ModelLoadError("model 'm' failed to load: bad magic", model="m")
    actions = decide(
        view(S.STARTING, reported=reported), WorkerExited(7, WorkerExit.LOAD_ERROR), NOW
    )
    assert without_logs(actions) == [CRASHED, MarkFailed(reported, ExitReason.LOAD_ERROR)]
    # Without a report, the error still says where to look.
    bare = decide(view(S.STARTING), WorkerExited(7, WorkerExit.LOAD_ERROR), NOW)[-1]
    assert isinstance(bare, MarkFailed) and "mlsup logs m" in bare.error.message


def test_an_oom_without_any_measure_still_grows_from_nothing_to_one_mb() -> None:
    actions = decide(view(estimate_mb=None), WorkerExited(7, WorkerExit.OOM), NOW)
    assert SetEstimate(1) in actions


def test_a_lost_lease_drains_and_tells_waiters_why() -> None:
    lost = LeaseLost("lease expired", lease_id="L")
    actions = decide(view(S.READY, lease_lost=lost), Tick(), NOW)
    assert actions == [Drain(ExitReason.LEASE_LOST, f"lease lost: {lost}", error=lost)]


@pytest.mark.parametrize(
    ("remaining_s", "grace_s"),
    [(10.0, 5.0), (3.0, 3.0 - defaults.PREEMPT_YIELD_MARGIN_S), (0.1, 0.0)],
)
def test_preemption_drains_within_the_requesters_deadline(
    remaining_s: float, grace_s: float
) -> None:
    actions = decide(view(S.READY), PreemptionAsked(remaining_s, "big"), NOW)
    drain = without_logs(actions)
    assert len(drain) == 1 and isinstance(drain[0], Drain)
    assert drain[0].reason is ExitReason.PREEMPTED and drain[0].note == "preempted"
    assert drain[0].grace_s == pytest.approx(grace_s)
    assert isinstance(drain[0].error, Preempted)
    assert any(isinstance(a, Log) and "preempted by big" in a.text for a in actions)


def test_every_unexpected_exit_is_logged_with_pid_and_how() -> None:
    actions = decide(view(), WorkerExited(pid=4242, code=KILLED), NOW)
    assert isinstance(actions[0], Log)
    assert "4242" in actions[0].text and "SIGKILL" in actions[0].text


def test_decide_changes_nothing_it_reads() -> None:
    snapshot = view(S.READY, crash_times=(NOW - 1,), oom_reported=True)
    before = dataclasses.replace(snapshot)
    decide(snapshot, WorkerExited(1, WorkerExit.OOM), NOW)
    assert snapshot == before
    assert snapshot.limits.restart.decide((), NOW).crashes == 1  # the policy kept no history


def test_a_reported_oom_error_is_what_waiters_get_after_flapping() -> None:
    oom = ModelOOM("CUDA out of memory", model="m")
    actions = decide(
        view(crash_times=(NOW - 2, NOW - 1), reported=oom, oom_reported=True),
        WorkerExited(7, WorkerExit.OOM),
        NOW,
    )
    assert isinstance(actions[-1], MarkFailed) and isinstance(actions[-1].error, ModelFailed)


COOLDOWN = LIMITS.restart.cooldown_s
CRASH_LOOP = ModelFailed("model 'm' crashed 3 times within 60 s", model="m")


@pytest.mark.parametrize(
    ("snapshot", "refused"),
    [
        (view(S.FAILED, failure=CRASH_LOOP, failed_at=NOW - 1), True),
        (view(S.FAILED, failure=CRASH_LOOP, failed_at=NOW - COOLDOWN + 0.5), True),
        (view(S.FAILED, failure=CRASH_LOOP, failed_at=NOW - COOLDOWN), False),  # cooled down
        (view(S.FAILED, failure=None, failed_at=None), False),  # never failed here
        (view(S.UNLOADED), False),
        (view(S.READY), False),
        (view(S.BACKOFF), False),
    ],
)
def test_implicit_loads_leave_a_failed_model_parked_until_its_cool_down(
    snapshot: View, refused: bool
) -> None:
    assert (implicit_load_refused(snapshot, NOW) is not None) is refused


def test_a_refused_implicit_load_names_the_cause_and_when_to_retry() -> None:
    refusal = implicit_load_refused(view(S.FAILED, failure=CRASH_LOOP, failed_at=NOW - 100), NOW)
    assert isinstance(refusal, ModelFailed)
    assert refusal.context["retry_in_s"] == COOLDOWN - 100
    assert "crashed 3 times" in refusal.message and "mlsup load m" in refusal.message


# LIMITS: heartbeats every HEARTBEAT_S, hung after MISSES of them.
SILENT = LIMITS.heartbeat_s * LIMITS.heartbeat_misses


@pytest.mark.parametrize(
    ("changes", "hung"),
    [
        ({"progress_at": NOW - SILENT, "cpu_at": NOW - SILENT}, "no heartbeat and no CPU use"),
        ({"progress_at": NOW - SILENT + 0.1, "cpu_at": 0.0}, None),  # a heartbeat came
        ({"progress_at": NOW - SILENT, "cpu_at": NOW - 1}, None),  # silent, but computing
        ({"busy_since": NOW - LIMITS.hung_call_s}, "a call has run for"),
        ({"busy_since": NOW - LIMITS.hung_call_s + 1}, None),
        (  # killed already: its exit is on its way
            {"progress_at": 0.0, "cpu_at": 0.0, "kill_reason": ExitReason.HUNG},
            None,
        ),
    ],
)
def test_a_ready_worker_is_hung_when_silent_and_idle_or_stuck_in_one_call(
    changes: dict[str, object], hung: str | None
) -> None:
    actions = without_logs(decide(view(S.READY, **changes), Tick(), NOW))
    if hung is None:
        assert actions == []
    else:
        (kill,) = actions
        assert isinstance(kill, KillWorker) and kill.reason is ExitReason.HUNG
        assert kill.note.startswith(hung)


def test_only_a_ready_worker_is_judged_hung() -> None:
    for state in (S.STARTING, S.BACKOFF, S.FAILED, S.UNLOADED):
        silent = view(state, progress_at=NOW - SILENT + 1, cpu_at=0.0, busy_since=0.0)
        assert without_logs(decide(silent, Tick(), NOW)) == []


def test_a_hung_worker_respawns_as_hung_and_counts_as_a_crash() -> None:
    hung = view(S.READY, kill_reason=ExitReason.HUNG, kill_note="no heartbeat for 10 s")
    actions = without_logs(decide(hung, WorkerExited(7, KILLED), NOW))
    assert actions[-1] == RespawnAfter(0.0, ExitReason.HUNG, "hung: no heartbeat for 10 s")
    assert RecordCrashes((NOW,)) in actions


OVER_FOR = LIMITS.vram_over_for_s
MARGIN = LIMITS.vram_over_margin_mb


def test_a_worker_over_its_lease_by_more_than_the_margin_for_long_enough_is_an_oom() -> None:
    over = view(S.READY, leased_mb=400, vram_peak_mb=900, vram_over_since=NOW - OVER_FOR)
    (kill,) = without_logs(decide(over, Tick(), NOW))
    assert isinstance(kill, KillWorker) and kill.reason is ExitReason.OOM
    assert kill.note.startswith("used 900 MB of VRAM on a 400 MB lease")
    not_yet = dataclasses.replace(over, vram_over_since=NOW - OVER_FOR + 0.1)
    assert without_logs(decide(not_yet, Tick(), NOW)) == []


def test_an_enforced_oom_re_leases_at_the_measured_peak() -> None:
    killed = view(S.READY, kill_reason=ExitReason.OOM, kill_note="used 900 MB", vram_peak_mb=900)
    actions = without_logs(decide(killed, WorkerExited(7, KILLED), NOW))
    assert SetEstimate(900) in actions and ReleaseLease() in actions
    assert isinstance(actions[-1], RespawnAfter) and actions[-1].reason is ExitReason.OOM


@pytest.mark.parametrize(
    ("since", "used", "leased", "expected"),
    [
        (None, 400 + MARGIN + 1, 400, NOW),  # over now: from now
        (NOW - 3, 400 + MARGIN + 1, 400, NOW - 3),  # still over: since then
        (NOW - 3, 400 + MARGIN, 400, None),  # back within the margin
        (NOW - 3, None, 400, None),  # no reading
        (None, 9000, None, None),  # no lease
    ],
)
def test_over_lease_since_counts_only_unbroken_overuse(
    since: float | None, used: int | None, leased: int | None, expected: float | None
) -> None:
    assert over_lease_since(since, used, leased, LIMITS, NOW) == expected
