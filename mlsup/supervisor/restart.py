"""When to respawn a crashed worker, and when to give up: a pure policy (circus' flapping, rq's
backoff), tested without processes or clocks."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from mlsup import defaults

__all__ = ["RestartDecision", "RestartPolicy"]


@dataclass(frozen=True)
class RestartDecision:
    """Respawn after ``delay_s``, or give up (``give_up``) after ``crashes`` recent crashes.

    ``recent`` is the crash history to remember (the times still inside the window).
    """

    give_up: bool
    delay_s: float
    crashes: int
    recent: tuple[float, ...] = ()


@dataclass
class RestartPolicy:
    """A first crash respawns at once; more within ``window_s`` back off exponentially (capped);
    more than ``max_crashes`` crashes within ``window_s`` is flapping, and the model is marked
    FAILED. A FAILED model is parked for ``cooldown_s``: only an explicit load revives it
    sooner.

    ``now`` values are seconds on any monotonic clock, passed in by the caller.
    """

    initial_s: float = defaults.RESTART_BACKOFF_INITIAL_S
    factor: float = defaults.RESTART_BACKOFF_FACTOR
    max_s: float = defaults.RESTART_BACKOFF_MAX_S
    max_crashes: int = defaults.RESTART_MAX_CRASHES
    window_s: float = defaults.RESTART_WINDOW_S
    cooldown_s: float = defaults.RESTART_FAILED_COOLDOWN_S
    _crashes: deque[float] = field(default_factory=deque, repr=False)

    def crashed(self, now: float) -> RestartDecision:
        """Record a crash at ``now`` and decide what to do."""
        decision = self.decide(self._crashes, now)
        self._crashes = deque(decision.recent)
        return decision

    def decide(self, history: Iterable[float], now: float) -> RestartDecision:
        """What to do about a crash at ``now`` after the crashes at ``history``; changes
        nothing (the caller keeps ``decision.recent`` as the next history)."""
        recent = tuple(t for t in (*history, now) if now - t <= self.window_s)
        count = len(recent)
        if count > self.max_crashes:
            return RestartDecision(give_up=True, delay_s=0.0, crashes=count, recent=recent)
        # One crash is an accident: serve again at once. Repeated ones back off.
        delay = 0.0 if count == 1 else min(self.max_s, self.initial_s * self.factor ** (count - 2))
        return RestartDecision(give_up=False, delay_s=delay, crashes=count, recent=recent)

    def reset(self) -> None:
        """Forget past crashes (an explicit load of a failed model)."""
        self._crashes.clear()
