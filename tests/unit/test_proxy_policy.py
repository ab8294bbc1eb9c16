"""The proxy's retry policy, on its own."""

from __future__ import annotations

from typing import Any

import pytest

from mlsup.contracts import ModelStatus
from mlsup.errors import ModelFailed, Preempted, WorkerCrashed
from mlsup.proxy import idempotent
from mlsup.proxy_core import classify_loss, read_row


@pytest.mark.parametrize(
    ("op", "kwargs", "expected"),
    [
        ("embed", {}, True),
        ("run", {}, True),
        ("transcribe", {}, True),
        ("chat", {}, False),
        ("chat", {"seed": 1}, True),
        ("chat", {"temperature": 0}, True),
        ("chat", {"seed": 1, "stream": True}, False),
        ("generate_image", {"seed": 0}, True),
        ("generate_image", {}, False),
        ("shutdown", {"seed": 1}, False),
    ],
)
def test_retry_policy(op: str, kwargs: dict[str, Any], expected: bool) -> None:
    assert idempotent(op, kwargs) is expected


def row(**fields: Any) -> ModelStatus:
    """A status row of model m whose worker pid 7 is gone."""
    base = {"model": "m", "loader": "probe", "state": "starting", "pid": None, "generation": 2,
            "endpoint": None, "exit_code": 0, "last_exit": "exited with code 0",
            "exit_reason": "idle", "reason": "idle for 300 s", "error": None}  # fmt: skip
    return read_row({**base, **fields})


def test_only_a_clean_unload_makes_an_unanswered_call_safe_to_resend() -> None:
    assert classify_loss("m", 7, row()).unread
    assert not classify_loss("m", 7, row(exit_code=-9)).unread  # killed by SIGKILL
    assert not classify_loss("m", 7, row(exit_reason="preempted")).unread
    assert not classify_loss("m", 7, row(pid=7)).unread  # the same worker: not known gone
    assert not classify_loss("m", 7, None).unread  # no supervisor to ask


@pytest.mark.parametrize(
    ("fields", "expected", "words"),
    [
        ({"exit_code": -9, "last_exit": "exited with signal SIGKILL", "reason": None},
         WorkerCrashed, "exited with signal SIGKILL"),
        ({"exit_reason": "preempted"}, Preempted, "higher-priority"),
        ({"state": "failed", "error": ModelFailed("crashed 6 times").to_wire()},
         ModelFailed, "crashed 6 times"),
        ({"exit_code": None, "last_exit": None, "reason": None}, WorkerCrashed, "died"),
    ],
)  # fmt: skip
def test_what_a_lost_worker_means(fields: dict[str, Any], expected: type, words: str) -> None:
    error = classify_loss("m", 7, row(**fields)).error
    assert type(error) is expected and words in str(error)
    assert classify_loss("m", 7, None).error.context["pid"] == 7
