"""FallbackChain: the order, the "not now" rule, and what the caller is told."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from mlsup.errors import (
    CapacityExceeded,
    ConfigError,
    FallbackExhausted,
    LeaseTimeout,
    ModelOOM,
    Preempted,
    WorkerCrashed,
)
from mlsup.service.fallback import FallbackChain, is_not_now


def failing(error: BaseException) -> Any:
    async def tier(text: str) -> str:
        raise error

    return tier


async def echo(text: str) -> str:
    return f"rules: {text}"


@pytest.mark.parametrize(
    "error",
    [
        LeaseTimeout("busy"),
        CapacityExceeded("too big"),
        ModelOOM("oom"),
        Preempted("yielded"),
        WorkerCrashed("died"),
        TimeoutError(),
        asyncio.TimeoutError(),
    ],
)
def test_not_now_errors(error: BaseException) -> None:
    assert is_not_now(error)


@pytest.mark.parametrize("error", [ValueError("bad"), ConfigError("bad"), KeyError("x")])
def test_bad_input_is_not_a_reason_to_fall_back(error: BaseException) -> None:
    assert not is_not_now(error)


async def test_the_first_tier_that_serves_answers_and_the_result_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    chain = FallbackChain(
        [("large", failing(LeaseTimeout("no lease"))), ("small", failing(ModelOOM("oom"))),
         ("rules", echo)],
        name="conversation",
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="mlsup.service.fallback"):
        result = await chain.run("hi")
    assert result.value == "rules: hi" and result.tier == "rules" and result.degraded
    assert [failure.tier for failure in result.skipped] == ["large", "small"]
    assert "large: LeaseTimeout: no lease" in result.reason and "small: ModelOOM" in result.reason
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "'large'" in warnings[0] and "'small'" in warnings[0]
    assert "'small'" in warnings[1] and "'rules'" in warnings[1]


async def test_the_first_tier_serving_is_not_degraded() -> None:
    result = await FallbackChain({"only": echo}).run("x")
    assert result.tier == "only" and not result.degraded and result.reason == ""


async def test_bad_input_fails_at_once_without_trying_other_tiers() -> None:
    called: list[str] = []

    async def later(text: str) -> str:
        called.append(text)
        return text

    chain = FallbackChain([("large", failing(ValueError("bad prompt"))), ("rules", later)])
    with pytest.raises(ValueError, match="bad prompt"):
        await chain.run("x")
    assert called == []


async def test_when_every_tier_fails_one_error_carries_every_cause() -> None:
    first, second = LeaseTimeout("no lease"), Preempted("yielded")
    chain = FallbackChain([("large", failing(first)), ("small", failing(second))], name="conv")
    with pytest.raises(FallbackExhausted) as caught:
        await chain.run("x")
    assert caught.value.causes == [("large", first), ("small", second)]
    assert "large: LeaseTimeout" in str(caught.value) and "small: Preempted" in str(caught.value)
    assert caught.value.context["chain"] == "conv" and caught.value.retryable


async def test_a_slow_tier_times_out_into_the_next() -> None:
    never = asyncio.Event()

    async def stuck(text: str) -> str:
        await never.wait()
        return text

    chain = FallbackChain([("stuck", stuck), ("rules", echo)], tier_timeout_s=0.01)
    result = await chain.run("x")
    assert result.tier == "rules" and isinstance(result.skipped[0].error, TimeoutError)


async def test_plain_functions_are_tiers_too() -> None:
    result = await FallbackChain([("sync", lambda text: text.upper())]).run("x")
    assert result.value == "X"


@pytest.mark.parametrize(
    ("tiers", "error"),
    [
        ([], ValueError),
        ([("a", echo), ("a", echo)], ValueError),
        ([("", echo)], ValueError),
        ([("a", "not callable")], TypeError),
    ],
)
def test_bad_chains_are_refused(tiers: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        FallbackChain(tiers)
