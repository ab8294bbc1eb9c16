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
