"""``FallbackChain``: named tiers tried in order when a tier cannot serve *now*.

The seed document's conversation runner answers with a large model under a lease, else a small
one, else rules. Its principle is "fail fast, no silent degradation", so a chain:

- falls back only on the errors that mean "not now" (:data:`NOT_NOW`: no lease in time, the
  GPU is too small or out of memory, preempted, the worker crashed, a timeout) and never on bad
  input, which fails at once from the first tier;
- says which tier served and why each earlier one did not (:class:`FallbackResult`), and logs
  each fallback as a warning;
- raises one :class:`~mlsup.errors.FallbackExhausted` carrying every cause when no tier served.

The decision (:func:`is_not_now`, :func:`exhausted`) is pure; :meth:`FallbackChain.run` only
calls the tiers in order.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from mlsup.errors import (
    CapacityExceeded,
    FallbackExhausted,
    LeaseLost,
    LeaseTimeout,
    ModelOOM,
    Preempted,
    RequestTimeout,
    WorkerCrashed,
)

__all__ = [
    "NOT_NOW",
    "FallbackChain",
    "FallbackResult",
    "Tier",
    "TierFailure",
    "exhausted",
    "is_not_now",
]

T = TypeVar("T")

#: A tier: called with the chain's arguments; may be a coroutine function or a plain one.
Tier = Callable[..., Awaitable[T] | T]

#: The errors after which the next tier is tried: the tier cannot serve now, the input is fine.
NOT_NOW: tuple[type[BaseException], ...] = (
    LeaseTimeout,
    CapacityExceeded,
    LeaseLost,
    ModelOOM,
    Preempted,
    WorkerCrashed,
    RequestTimeout,
    TimeoutError,
    asyncio.TimeoutError,
)

_log = logging.getLogger(__name__)


def is_not_now(error: BaseException) -> bool:
    """Whether ``error`` means "this tier cannot serve now" (fall back) rather than a bad
    request or a bug (fail at once)."""
    return isinstance(error, NOT_NOW)


@dataclass(frozen=True)
class TierFailure:
    """Why one tier did not serve."""

    tier: str
    error: BaseException

    def describe(self) -> str:
        return f"{self.tier}: {type(self.error).__name__}: {self.error}"


@dataclass(frozen=True)
class FallbackResult(Generic[T]):
    """What a chain returned: the ``value``, the ``tier`` that served it, and the tiers tried
    before it with their errors (``skipped``, empty when the first tier served)."""

    value: T
    tier: str
    skipped: tuple[TierFailure, ...] = ()

    @property
    def degraded(self) -> bool:
        """Whether a tier other than the first served."""
        return bool(self.skipped)

    @property
    def reason(self) -> str:
        """Why the earlier tiers did not serve, one ``tier: error`` per tier ("" if none)."""
        return "; ".join(failure.describe() for failure in self.skipped)


def exhausted(chain: str, failures: Sequence[TierFailure]) -> FallbackExhausted:
    """The error of a chain whose every tier failed "not now"."""
    causes = "; ".join(failure.describe() for failure in failures)
    return FallbackExhausted(
        f"no tier of {chain!r} could serve now ({causes}); retry later or free GPU memory",
        causes=[(failure.tier, failure.error) for failure in failures],
        chain=chain,
        tiers=", ".join(failure.tier for failure in failures),
    )


class FallbackChain(Generic[T]):
    """Named tiers tried in order: ``await chain.run(*args, **kwargs)`` calls the first with
    those arguments, and the next one only when it failed with a :data:`NOT_NOW` error.

    ``tiers`` is a mapping or a sequence of ``(name, callable)``; ``tier_timeout_s`` bounds each
    tier (its expiry is a "not now" too). Any other error propagates unchanged at once.
    """

    def __init__(
        self,
        tiers: Mapping[str, Tier[T]] | Sequence[tuple[str, Tier[T]]],
        *,
        name: str = "fallback",
        tier_timeout_s: float | None = None,
    ) -> None:
        pairs = list(tiers.items()) if isinstance(tiers, Mapping) else list(tiers)
        if not pairs:
            raise ValueError("a FallbackChain needs at least one tier")
        names = [tier for tier, _ in pairs]
        for tier, call in pairs:
            if not isinstance(tier, str) or not tier:
                raise ValueError(f"tier names must be non-empty strings, not {tier!r}")
            if not callable(call):
                raise TypeError(f"tier {tier!r} is not callable: {call!r}")
        duplicates = sorted({tier for tier in names if names.count(tier) > 1})
        if duplicates:
            raise ValueError(f"tier names must be unique; repeated: {', '.join(duplicates)}")
        if tier_timeout_s is not None and tier_timeout_s <= 0:
            raise ValueError(f"tier_timeout_s must be positive, not {tier_timeout_s!r}")
        self.name = name
        self.tiers: tuple[tuple[str, Tier[T]], ...] = tuple(pairs)
        self.tier_timeout_s = tier_timeout_s

    async def run(self, *args: Any, **kwargs: Any) -> FallbackResult[T]:
        """Serve with the first tier that can; :class:`FallbackExhausted` if none can."""
        failures: list[TierFailure] = []
        for position, (tier, call) in enumerate(self.tiers):
            try:
                value = await self._call(call, args, kwargs)
            except Exception as error:
                if not is_not_now(error):
                    raise
                failures.append(TierFailure(tier, error))
                following = self.tiers[position + 1][0] if position + 1 < len(self.tiers) else None
                if following is not None:
                    _log.warning(
                        "%s: tier %r cannot serve now (%s: %s); falling back to %r",
                        self.name,
                        tier,
                        type(error).__name__,
                        error,
                        following,
                    )
                continue
            return FallbackResult(value=value, tier=tier, skipped=tuple(failures))
        raise exhausted(self.name, failures) from failures[-1].error

    async def _call(self, call: Tier[T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        async def invoke() -> T:
            result = call(*args, **kwargs)
            if inspect.isawaitable(result):
                return await result
            return result

        if self.tier_timeout_s is None:
            return await invoke()
        return await asyncio.wait_for(invoke(), self.tier_timeout_s)
