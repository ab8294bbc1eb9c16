"""The lease decisions as pure functions: admission, fair queue order, victim choice, best fit.

``admission.lua`` must take these decisions atomically inside Redis, so it carries its own copy
of them in Lua; this module is the reference model. Unit tests check the rules here, and a
differential test drives the Lua script and this model with the same random operations and
checks that they decide the same. Change both together.

Rules:

* A request larger than the GPU's capacity can never be granted (:attr:`Verdict.TOO_BIG`).
* The queue is ordered by :func:`queue_score`: priority first (higher first), then arrival.
* A request is admitted iff it fits (``used + vram <= capacity``) *and* no live waiter is ahead
  of it in that order. Head-of-line blocking is deliberate: a waiter is never overtaken by a
  later request of the same or lower priority, even a small one that would fit, so a large
  request cannot starve behind a stream of small ones.
* The head of the queue that does not fit asks lower-priority holders to yield: the cheapest
  set (:func:`choose_victims`) that frees enough, counting holders already asked to yield.
  Equal priorities never preempt each other.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mlsup import defaults
from mlsup.kit.leases.priority import Priority

__all__ = [
    "QUEUE_PRIORITY_STRIDE",
    "Decision",
    "GpuView",
    "Holder",
    "Verdict",
    "Waiter",
    "best_fit",
    "choose_victims",
    "decide_admission",
    "queue_score",
]

#: Arrival numbers below this keep the priority ordering intact in a queue score. 2**40 arrivals
#: per GPU and 4 priorities stay below 2**53, so scores are exact in Redis' doubles.
QUEUE_PRIORITY_STRIDE = 1 << 40


def queue_score(priority: int, seq: int) -> int:
    """Order of a waiter in its GPU's queue: lower is served first."""
    return (int(Priority.CRITICAL) - priority) * QUEUE_PRIORITY_STRIDE + seq


@dataclass(frozen=True)
class Holder:
    """A live lease as the decisions see it."""

    id: str
    vram_mb: int
    priority: int
    preempt_pending: bool = False


@dataclass(frozen=True)
class Waiter:
    """A queued, live request."""

    id: str
    vram_mb: int
    priority: int
    score: int


class Verdict(enum.Enum):
    """What admission decided for one request."""

    ADMIT = "admit"
    QUEUE = "queue"
    TOO_BIG = "too_big"


@dataclass(frozen=True)
class Decision:
    """The outcome of one admission attempt.

    ``victims`` are the holders newly asked to yield (only for a queued head of the queue);
    ``blocked`` says a waiter ahead of the request is what keeps it waiting.
    """

    verdict: Verdict
    victims: tuple[str, ...] = ()
    blocked: bool = False


def _canonical(holders: Iterable[Holder]) -> list[Holder]:
    # Cheapest victims first: lowest priority, then largest (fewest to free), then id.
    return sorted(holders, key=lambda h: (h.priority, -h.vram_mb, h.id))


def choose_victims(
    holders: Sequence[Holder], need_mb: int, priority: int
) -> tuple[str, ...] | None:
    """The cheapest set of holders of priority below ``priority`` that frees ``need_mb``.

    Holders already asked to yield count as freed first and are not returned again. Among the
    other candidates (at most :data:`~mlsup.defaults.PREEMPT_MAX_CANDIDATES`, lowest priority
    and largest first) the set minimizing (highest victim priority, MB freed, number of
    victims) is chosen, the first in subset enumeration order on ties. Returns ``()`` when no
    new victim is needed and ``None`` when preempting every candidate would not free enough.
    """
    candidates = [h for h in holders if h.priority < priority]
    remaining = need_mb - sum(h.vram_mb for h in candidates if h.preempt_pending)
    if remaining <= 0:
        return ()
    fresh = _canonical(h for h in candidates if not h.preempt_pending)
    fresh = fresh[: defaults.PREEMPT_MAX_CANDIDATES]
    if sum(h.vram_mb for h in fresh) < remaining:
        return None
    best_mask = 0
    best_cost: tuple[int, int, int] | None = None
    for mask in range(1, 1 << len(fresh)):
        total = top = count = 0
        for i, holder in enumerate(fresh):
            if mask >> i & 1:
                total += holder.vram_mb
                top = max(top, holder.priority)
                count += 1
        if total >= remaining:
            cost = (top, total, count)
            if best_cost is None or cost < best_cost:
                best_mask, best_cost = mask, cost
    return tuple(h.id for i, h in enumerate(fresh) if best_mask >> i & 1)


def decide_admission(
    capacity_mb: int,
    holders: Sequence[Holder],
    waiters: Sequence[Waiter],
    *,
    request_id: str,
    vram_mb: int,
    priority: int,
    score: int,
) -> Decision:
    """Admit, or queue (possibly asking lower priorities to yield), one request.

    ``holders`` and ``waiters`` are the live ones (expired and revoked leases already purged);
    ``score`` is the request's queue score: its own if it is queued, else the score it would get.
    """
    if vram_mb > capacity_mb:
        return Decision(Verdict.TOO_BIG)
    used = sum(h.vram_mb for h in holders)
    blocked = any(w.score < score for w in waiters if w.id != request_id)
    if blocked:
        return Decision(Verdict.QUEUE, blocked=True)
    if used + vram_mb <= capacity_mb:
        return Decision(Verdict.ADMIT)
    victims = choose_victims(holders, used + vram_mb - capacity_mb, priority)
    return Decision(Verdict.QUEUE, victims=victims or ())


@dataclass(frozen=True)
class GpuView:
    """One GPU's state for choosing where a ``gpu=None`` request goes."""

    index: int
    capacity_mb: int
    holders: tuple[Holder, ...]
    waiting: int

    @property
    def used_mb(self) -> int:
        return sum(h.vram_mb for h in self.holders)


def best_fit(gpus: Sequence[GpuView], vram_mb: int, priority: int) -> int | None:
    """The GPU for a request that names none; ``None`` if it exceeds every GPU's capacity.

    In order: the GPU where it fits now leaving the least free; else the one where the least
    VRAM must be preempted; else the one with the fewest waiters and least overflow.
    """
    eligible = [g for g in gpus if g.capacity_mb >= vram_mb]
    if not eligible:
        return None
    fitting = [g for g in eligible if g.waiting == 0 and g.used_mb + vram_mb <= g.capacity_mb]
    if fitting:
        return min(fitting, key=lambda g: (g.capacity_mb - g.used_mb - vram_mb, g.index)).index
    preemptable: list[tuple[int, int]] = []
    for g in eligible:
        if g.waiting:
            continue
        victims = choose_victims(g.holders, g.used_mb + vram_mb - g.capacity_mb, priority)
        if victims is not None:
            freed = sum(h.vram_mb for h in g.holders if h.id in victims)
            preemptable.append((freed, g.index))
    if preemptable:
        return min(preemptable)[1]
    return min(
        eligible, key=lambda g: (g.waiting, g.used_mb + vram_mb - g.capacity_mb, g.index)
    ).index
