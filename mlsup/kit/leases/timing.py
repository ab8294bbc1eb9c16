"""The time constants one boss works with, defaulting to :mod:`mlsup.defaults`."""

from __future__ import annotations

from dataclasses import dataclass

from mlsup import defaults
from mlsup.errors import ConfigError

__all__ = ["LeaseTiming"]


@dataclass(frozen=True)
class LeaseTiming:
    """TTLs, intervals and grace periods (seconds). Tests shorten them; production keeps the
    defaults. ``renew_interval_s`` defaults to a third of ``ttl_s``
    (:data:`~mlsup.defaults.LEASE_RENEWALS_PER_TTL`)."""

    ttl_s: float = defaults.LEASE_TTL_S
    renew_interval_s: float | None = None
    grace_s: float = defaults.PREEMPT_GRACE_S
    waiter_ttl_s: float = defaults.WAITER_TTL_S
    settle_s: float | None = None
    tombstone_s: float = defaults.LEASE_TOMBSTONE_S

    def __post_init__(self) -> None:
        if self.ttl_s <= 0 or self.grace_s < 0 or self.waiter_ttl_s <= 0:
            raise ConfigError(
                f"lease timing must be positive: ttl_s={self.ttl_s}, grace_s={self.grace_s}, "
                f"waiter_ttl_s={self.waiter_ttl_s}"
            )
        if self.renew_interval >= self.ttl_s:
            raise ConfigError(
                f"renew_interval_s ({self.renew_interval}) must be below ttl_s ({self.ttl_s}), "
                "or every lease expires between renewals"
            )

    @property
    def renew_interval(self) -> float:
        """Seconds between renewals."""
        if self.renew_interval_s is None:
            return self.ttl_s / defaults.LEASE_RENEWALS_PER_TTL
        return self.renew_interval_s

    @property
    def settle(self) -> float:
        """Seconds after a Redis start during which only re-registrations are admitted."""
        # One TTL by default: every live holder renews (and so re-registers) within one renew
        # interval, which is below the TTL.
        return self.ttl_s if self.settle_s is None else self.settle_s

    @staticmethod
    def ms(seconds: float) -> int:
        """Seconds as whole milliseconds (what the scripts take), at least 1."""
        return max(1, round(seconds * 1000))
