"""The proxy's retry, lost-worker, deadline and stream logic, once, against a scripted fake
supervisor, through both drivers (threads and asyncio). The same scenarios run against real
processes in tests/integration/test_proxy.py."""

from __future__ import annotations

from typing import Any

import pytest

import mlsup
from mlsup.errors import (
    ModelNotFound,
    ModelOOM,
    Preempted,
    RequestTimeout,
    SupervisorUnavailable,
    WorkerCrashed,
)
from mlsup.testing.fake_supervisor import (
    Answer,
    Crash,
    Drain,
    Fail,
    FakeSupervisor,
    Hang,
    Preempt,
    Stale,
    Stream,
)

GREEDY = {"temperature": 0}
SAMPLED = {"temperature": 0.8}  # not idempotent: never sent twice after it may have run


def serve(op: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """How a healthy fake worker answers."""
    if op == "embed":
        return [[float(len(text))] for text in args[0]]
    if op == "complete.stream":
        return list(reversed(args[0]))
    return f"{op}:{args[0]}"


@pytest.fixture
def fake(side: Any) -> FakeSupervisor:
    supervisor = FakeSupervisor(side.transport)
    supervisor.add_model("m", serve)
    return supervisor


def connect(side: Any, fake: FakeSupervisor) -> Any:
    if side.name == "async":
        return side.do(mlsup.aconnect(fake.runtime, transport=side.transport))
    return mlsup.connect(fake.runtime, transport=side.transport)


def test_calls_load_on_first_use_and_reuse_the_worker(side: Any, fake: FakeSupervisor) -> None:
    sup = connect(side, fake)
    model = sup.model("m", timeout=30)
    assert side.do(model.embed(["ab", "c"])) == [[2.0], [1.0]]
    assert side.do(model.chat("hi", **SAMPLED)) == "chat:hi"
    assert sup.model("m", timeout=30) is model
    assert fake.loads == 1 and fake.runs("m") == 2
    side.do(sup.close())
    assert side.transport.open_channels == 0  # nothing left open


def test_a_crash_after_reading_retries_an_idempotent_call_once(
    side: Any, fake: FakeSupervisor
) -> None:
    fake.script("m", Crash())
    model = connect(side, fake).model("m", timeout=30)
    assert side.do(model.embed(["abc"])) == [[3.0]]  # on the respawned worker
    assert fake.runs("m") == 2 and fake.loads == 2


def test_a_crash_after_reading_fails_a_call_that_may_not_run_twice(
    side: Any, fake: FakeSupervisor
) -> None:
    fake.script("m", Crash())
    model = connect(side, fake).model("m", timeout=30)
    with pytest.raises(WorkerCrashed, match="SIGKILL") as crashed:
        side.do(model.chat("hi", **SAMPLED))
    assert crashed.value.context["pid"] == 1000
    assert fake.runs("m") == 1  # never sent again
    assert side.do(model.chat("again", **SAMPLED)) == "chat:again"  # the next call reloads


def test_a_second_crash_is_not_retried_again(side: Any, fake: FakeSupervisor) -> None:
    fake.script("m", Crash(), Crash(exit_code=-11))
    model = connect(side, fake).model("m", timeout=30)
    with pytest.raises(WorkerCrashed, match="SIGSEGV"):
        side.do(model.chat("hi", **GREEDY))
    assert fake.runs("m") == 2


def test_a_clean_drain_before_reading_resends_any_call(side: Any, fake: FakeSupervisor) -> None:
    fake.script("m", Drain())
    model = connect(side, fake).model("m", timeout=30)
    assert side.do(model.chat("hi", **SAMPLED)) == "chat:hi"
    assert fake.runs("m") == 1 and fake.loads == 2  # run once, on the new worker


def test_preemption_is_typed_and_retried_only_when_idempotent(
    side: Any, fake: FakeSupervisor
) -> None:
    fake.script("m", Preempt(), Preempt())
    model = connect(side, fake).model("m", timeout=30)
    with pytest.raises(Preempted, match="higher-priority"):
        side.do(model.chat("hi", **SAMPLED))
    assert side.do(model.embed(["ab"])) == [[2.0]]  # preempted, then retried
    assert fake.runs("m") == 1


def test_the_supervisor_may_learn_of_a_death_late(side: Any, fake: FakeSupervisor) -> None:
    fake.script("m", Crash(exit_code=-6, report_after=0.5))
    model = connect(side, fake).model("m", timeout=30)
    with pytest.raises(WorkerCrashed, match="SIGABRT"):
        side.do(model.complete("x", **SAMPLED))
    assert side.transport.now >= 0.5  # it asked until the row changed


def test_a_hung_worker_times_out_at_the_call_deadline(side: Any, fake: FakeSupervisor) -> None:
    fake.script("m", Hang())
    model = connect(side, fake).model("m", timeout=2)
    with pytest.raises(RequestTimeout):
        side.do(model.embed(["x"]))
    assert 2 <= side.transport.now <= 2.05
    assert fake.runs("m") == 1  # a timeout is not a lost worker: no retry


def test_the_deadline_covers_loading(side: Any, fake: FakeSupervisor) -> None:
    fake.load_takes = 10.0
    model = connect(side, fake).model("m", timeout=2)
    with pytest.raises(RequestTimeout, match="loading 'm' did not finish within 2 s"):
        side.do(model.embed(["x"]))
    fake.load_takes = 1.0
    assert side.do(model.embed(["x"])) == [[1.0]]


def test_errors_and_stale_replies(side: Any, fake: FakeSupervisor) -> None:
    fake.script("m", Fail(ModelOOM("CUDA out of memory")), Stale("old"), Answer("fresh"))
    model = connect(side, fake).model("m", timeout=30)
    with pytest.raises(ModelOOM):
        side.do(model.embed(["x"]))
    assert side.do(model.call("run", {})) == "fresh"
    with pytest.raises(ModelNotFound):
        side.do(connect(side, fake).model("nope").embed(["x"]))


def test_streams_deliver_pieces_and_a_crash_ends_them_typed(
    side: Any, fake: FakeSupervisor
) -> None:
    model = connect(side, fake).model("m", timeout=30)
    assert side.pieces(model.complete("abc", stream=True)) == (["c", "b", "a"], None)
    fake.script("m", Stream(("z", "y"), crash=Crash()))
    pieces, error = side.pieces(model.complete("zyx", stream=True, **GREEDY))
    assert pieces == ["z", "y"] and isinstance(error, WorkerCrashed)
    assert "SIGKILL" in str(error)
    fake.script("m", Stream(("a",), error=ModelOOM("mid-stream")))
    pieces, error = side.pieces(model.complete("a", stream=True))
    assert pieces == ["a"] and isinstance(error, ModelOOM)
    assert side.pieces(model.complete("abcdef", stream=True), limit=2) == (["f", "e"], None)
    assert fake.runs("m") == 4  # streams are never sent twice


def test_a_worker_gone_between_calls_is_replaced_silently(side: Any, fake: FakeSupervisor) -> None:
    model = connect(side, fake).model("m", timeout=30)
    side.do(model.embed(["a"]))
    side.transport.kill(1000)  # unloaded or killed while nobody called
    side.transport.now += 1.0
    assert side.do(model.embed(["ab"])) == [[2.0]]
    assert fake.loads == 2


def test_control_calls(side: Any, fake: FakeSupervisor) -> None:
    sup = connect(side, fake)
    assert side.do(sup.load("m", priority=mlsup.Priority.HIGH))["state"] == "ready"
    assert side.do(sup.row("m"))["pid"] == 1000
    assert side.do(sup.unload("m"))["state"] == "unloaded"
    assert side.do(sup.leases()) == []
    side.do(sup.stop())
    ops = [message.op for message in side.transport.received]
    assert ops == ["ping", "load", "status", "unload", "leases", "stop"]
    args = side.transport.received[1].args
    assert args["priority"] == "high" and args["wait"] is True


def test_no_supervisor_says_how_to_start_one(side: Any) -> None:
    connect_to: Any = mlsup.aconnect if side.name == "async" else mlsup.connect
    with pytest.raises(SupervisorUnavailable, match="mlsup start"):
        side.do(connect_to("/nowhere", transport=side.transport))
