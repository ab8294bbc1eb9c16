"""When to respawn a crashed worker, and when to give up: a pure policy (circus' flapping, rq's
backoff), tested without processes or clocks."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from mlsup import defaults

__all__ = ["RestartDecision", "RestartPolicy"]


@dataclass(frozen=True)
class RestartDecision:
    """Respawn after ``delay_s``, or give up (``give_up``) after ``crashes`` recent crashes."""

    give_up: bool
    delay_s: float
    crashes: int


@dataclass
class RestartPolicy:
    """A first crash respawns at once; more within ``window_s`` back off exponentially (capped);
    more than ``max_crashes`` crashes within ``window_s`` is flapping, and the model is marked
    FAILED.

    ``now`` values are seconds on any monotonic clock, passed in by the caller.
    """

    initial_s: float = defaults.RESTART_BACKOFF_INITIAL_S
    factor: float = defaults.RESTART_BACKOFF_FACTOR
    max_s: float = defaults.RESTART_BACKOFF_MAX_S
    max_crashes: int = defaults.RESTART_MAX_CRASHES
    window_s: float = defaults.RESTART_WINDOW_S
    _crashes: deque[float] = field(default_factory=deque, repr=False)

    def crashed(self, now: float) -> RestartDecision:
        """Record a crash at ``now`` and decide what to do."""
        self._crashes.append(now)
        while self._crashes and now - self._crashes[0] > self.window_s:
            self._crashes.popleft()
        count = len(self._crashes)
        if count > self.max_crashes:
            return RestartDecision(give_up=True, delay_s=0.0, crashes=count)
        # One crash is an accident: serve again at once. Repeated ones back off.
        delay = 0.0 if count == 1 else min(self.max_s, self.initial_s * self.factor ** (count - 2))
        return RestartDecision(give_up=False, delay_s=delay, crashes=count)

    def reset(self) -> None:
        """Forget past crashes (an explicit load of a failed model)."""
        self._crashes.clear()
