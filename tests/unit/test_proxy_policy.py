"""The proxy's retry policy, on its own."""

from __future__ import annotations

from typing import Any

import pytest

from mlsup.proxy import idempotent


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


def test_only_a_clean_unload_makes_an_unanswered_call_safe_to_resend() -> None:
    from mlsup.proxy import _cleanly_unloaded

    clean = {"pid": None, "exit_code": 0, "reason": "idle for 300 s"}
    assert _cleanly_unloaded(7, clean)
    assert not _cleanly_unloaded(7, {**clean, "exit_code": -9})  # killed by SIGKILL
    assert not _cleanly_unloaded(7, {**clean, "reason": "preempted"})
    assert not _cleanly_unloaded(7, {**clean, "pid": 7})  # the same worker: not known gone
    assert not _cleanly_unloaded(7, None)
