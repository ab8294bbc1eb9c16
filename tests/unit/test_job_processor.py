"""The job processor alone: defaults given to jobs, "not now" waited out within the bound,
other errors left to BullMQ's attempts, invalid data unrecoverable. A fake clock, no Redis."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from bullmq import UnrecoverableError

from mlsup import defaults
from mlsup.errors import LeaseTimeout, ModelFailed, Preempted, RemoteError, WorkerCrashed
from mlsup.queues.config import QueueSpec
from mlsup.queues.jobdata import JobCall
from mlsup.queues.processor import JobProcessor, apply_job_defaults, retry_pause

SPEC = QueueSpec("q", "m", "embed", frozenset({"embed", "run"}), model_wait_s=5.0)


class Job:
    """The two attributes of a bullmq Job the processor reads (and ``opts`` it fills in)."""

    def __init__(self, data: Any, **opts: Any) -> None:
        self.id = "1"
        self.data = data
        self.opts: dict[str, Any] = {"attempts": 0, **opts}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def processor(answers: list[Any], clock: Clock) -> tuple[JobProcessor, list[JobCall]]:
    """A processor whose model gives ``answers`` in turn (an exception is raised)."""
    calls: list[JobCall] = []

    async def call(plan: JobCall) -> Any:
        calls.append(plan)
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    return JobProcessor(SPEC, call, sleep=clock.sleep, clock=clock), calls


async def test_result_is_json_and_job_gets_queue_defaults() -> None:
    clock = Clock()
    run, calls = processor([np.ones((1, 2), np.float32)], clock)
    job = Job({"input": ["a"]})
    assert await run(job, "token") == [[1.0, 1.0]]
    assert calls == [JobCall("embed", [["a"]], {})]
    assert job.opts["attempts"] == defaults.QUEUE_ATTEMPTS
    assert job.opts["backoff"] == {"type": "exponential", "delay": defaults.QUEUE_BACKOFF_MS}


def test_producer_options_win() -> None:
    opts: dict[str, Any] = {"attempts": 1, "backoff": {"type": "fixed", "delay": 5}}
    apply_job_defaults(opts, SPEC)
    assert opts == {"attempts": 1, "backoff": {"type": "fixed", "delay": 5}}


@pytest.mark.parametrize(
    "not_now",
    [
        Preempted("yielded", model="m"),
        WorkerCrashed("killed by SIGKILL", model="m"),
        LeaseTimeout("no lease"),
    ],
)
async def test_not_now_is_waited_out(not_now: Exception) -> None:
    clock = Clock()
    run, calls = processor([not_now, not_now, {"ok": 1}], clock)
    assert await run(Job({"op": "run", "inputs": {"ok": 1}}), "t") == {"ok": 1}
    assert len(calls) == 3
    assert clock.sleeps == [retry_pause(1), retry_pause(2)]


async def test_not_now_past_the_bound_fails_the_attempt() -> None:
    clock = Clock()
    crash = WorkerCrashed("killed", model="m")
    run, calls = processor([crash] * 100, clock)
    with pytest.raises(WorkerCrashed):
        await run(Job({"input": "a"}), "t")
    assert clock.now <= SPEC.model_wait_s
    assert 3 < len(calls) < 100


@pytest.mark.parametrize("error", [ModelFailed("parked"), RemoteError("boom")])
async def test_other_errors_fail_the_attempt_at_once(error: Exception) -> None:
    clock = Clock()
    run, calls = processor([error], clock)
    with pytest.raises(type(error)):
        await run(Job({"input": "a"}), "t")
    assert len(calls) == 1 and clock.sleeps == []


async def test_invalid_data_is_unrecoverable_and_never_reaches_the_model() -> None:
    run, calls = processor([], Clock())
    with pytest.raises(UnrecoverableError, match=r"invalid job data: input: .*Expected"):
        await run(Job({"input": 5}), "t")
    assert calls == []


def test_retry_pauses_grow_to_the_cap() -> None:
    pauses = [retry_pause(n) for n in range(1, 12)]
    assert pauses[0] == defaults.QUEUE_RETRY_PAUSE_S
    assert all(b >= a for a, b in itertools.pairwise(pauses))
    assert pauses[-1] == defaults.QUEUE_RETRY_PAUSE_MAX_S
