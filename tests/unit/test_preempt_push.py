"""Parsing pushed preemption requests: well-formed ones, and hostile ones dropped."""

from __future__ import annotations

import pytest

from mlsup.kit.leases.priority import Priority
from mlsup.kit.leases.push import parse_push


def test_a_pushed_request_parses_into_its_lease_and_notice() -> None:
    pushed = parse_push("abc|1000|11000|2|req-1")
    assert pushed is not None
    lease_id, notice = pushed
    assert lease_id == "abc" and notice.now_ms == 1000 and notice.deadline_ms == 11000
    assert notice.priority is Priority(2) and notice.requester == "req-1"


def test_a_requester_may_contain_the_separator() -> None:
    pushed = parse_push("abc|1|2||a|b")
    assert pushed is not None and pushed[1].requester == "a|b" and pushed[1].priority is None


@pytest.mark.parametrize(
    "junk", ["", "garbage", "a|b|c|d", "id|x|2|1|r", "id|1|y|1|r", "id|1|2|99|r", "id|1|2|z|r"]
)
def test_malformed_pushes_are_dropped(junk: str) -> None:
    assert parse_push(junk) is None
