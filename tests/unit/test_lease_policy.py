from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlsup.errors import ConfigError
from mlsup.kit.leases.policy import (
    GpuView,
    Holder,
    Verdict,
    Waiter,
    best_fit,
    choose_victims,
    decide_admission,
    queue_score,
)
from mlsup.kit.leases.priority import Priority

holders_st = st.lists(
    st.builds(
        Holder,
        id=st.text("abcdef", min_size=1, max_size=4),
        vram_mb=st.integers(1, 500),
        priority=st.integers(0, 3),
        preempt_pending=st.booleans(),
    ),
    max_size=7,
    unique_by=lambda h: h.id,
)


def test_priority_is_ordered_and_parsed() -> None:
    assert Priority.LOW < Priority.NORMAL < Priority.HIGH < Priority.CRITICAL
    assert Priority.parse("high") is Priority.HIGH
    assert Priority.parse(" Critical ") is Priority.CRITICAL
    assert Priority.parse(0) is Priority.LOW
    assert Priority.parse(Priority.NORMAL) is Priority.NORMAL
    for bad in ("urgent", 7, True, ""):
        with pytest.raises(ConfigError, match="low, normal, high, critical"):
            Priority.parse(bad)  # type: ignore[arg-type]


def test_priority_names_are_its_labels_lowest_first() -> None:
    assert Priority.names() == ("low", "normal", "high", "critical")
    assert Priority.HIGH.label == "high"
    for name in Priority.names():
        assert Priority.parse(name).label == name


def test_queue_score_orders_priority_then_arrival() -> None:
    scores = [
        queue_score(Priority.NORMAL, 1),
        queue_score(Priority.CRITICAL, 9),
        queue_score(Priority.NORMAL, 2),
        queue_score(Priority.LOW, 0),
        queue_score(Priority.HIGH, 5),
    ]
    order = sorted(range(len(scores)), key=scores.__getitem__)
    assert order == [1, 4, 0, 2, 3]


@settings(max_examples=300)
@given(holders=holders_st, need=st.integers(1, 1500), priority=st.integers(0, 3))
def test_victims_are_the_cheapest_lower_priority_set(
    holders: list[Holder], need: int, priority: int
) -> None:
    victims = choose_victims(holders, need, priority)
    lower = [h for h in holders if h.priority < priority]
    pending_mb = sum(h.vram_mb for h in lower if h.preempt_pending)
    fresh = [h for h in lower if not h.preempt_pending]
    remaining = need - pending_mb
    # Brute force over every subset of the fresh candidates (<= 7 here, below the cap).
    feasible = [
        combo
        for n in range(len(fresh) + 1)
        for combo in itertools.combinations(fresh, n)
        if sum(h.vram_mb for h in combo) >= remaining
    ]
    if remaining <= 0:
        assert victims == ()
        return
    if not feasible:
        assert victims is None
        return
    assert victims is not None
    chosen = [h for h in holders if h.id in victims]
    assert all(h.priority < priority and not h.preempt_pending for h in chosen)
    assert sum(h.vram_mb for h in chosen) >= remaining

    def cost(combo: tuple[Holder, ...] | list[Holder]) -> tuple[int, int, int]:
        return (max(h.priority for h in combo), sum(h.vram_mb for h in combo), len(combo))

    assert cost(chosen) == min(cost(c) for c in feasible if c)


def test_equal_priorities_never_preempt() -> None:
    holders = [Holder("a", 800, Priority.NORMAL), Holder("b", 100, Priority.HIGH)]
    assert choose_victims(holders, 500, Priority.NORMAL) is None
    assert choose_victims(holders, 500, Priority.HIGH) == ("a",)
    assert choose_victims(holders, 50, Priority.CRITICAL) == ("a",)  # lowest priority first


def test_pending_victims_count_before_new_ones() -> None:
    holders = [Holder("a", 400, 0, preempt_pending=True), Holder("b", 300, 0)]
    assert choose_victims(holders, 400, 2) == ()
    assert choose_victims(holders, 600, 2) == ("b",)


@settings(max_examples=300)
@given(
    holders=holders_st,
    waiters=st.lists(st.tuples(st.integers(1, 500), st.integers(0, 3)), max_size=4),
    vram=st.integers(1, 1200),
    priority=st.integers(0, 3),
)
def test_admission_admits_iff_it_fits_and_nobody_waits_ahead(
    holders: list[Holder], waiters: list[tuple[int, int]], vram: int, priority: int
) -> None:
    queue = [Waiter(f"w{i}", mb, p, queue_score(p, i)) for i, (mb, p) in enumerate(waiters)]
    score = queue_score(priority, len(queue))
    decision = decide_admission(
        1000, holders, queue, request_id="me", vram_mb=vram, priority=priority, score=score
    )
    used = sum(h.vram_mb for h in holders)
    ahead = [w for w in queue if w.priority >= priority]
    if vram > 1000:
        assert decision.verdict is Verdict.TOO_BIG
    elif ahead:
        assert decision.verdict is Verdict.QUEUE and decision.blocked and not decision.victims
    elif used + vram <= 1000:
        assert decision.verdict is Verdict.ADMIT
    else:
        assert decision.verdict is Verdict.QUEUE
        assert decision.victims == (choose_victims(holders, used + vram - 1000, priority) or ())


def test_best_fit_prefers_tightest_fit_then_least_preemption() -> None:
    a = GpuView(0, 1000, (Holder("x", 300, 1),), 0)
    b = GpuView(1, 1000, (Holder("y", 600, 1),), 0)
    assert best_fit([a, b], 300, 1) == 1  # leaves 100 free rather than 400
    assert best_fit([a, b], 800, 1) in (0, 1)  # fits nowhere, no preemption: a queue
    c = GpuView(0, 1000, (Holder("x", 900, 0),), 0)
    d = GpuView(1, 1000, (Holder("y", 500, 0), Holder("z", 400, 0)), 0)
    assert best_fit([c, d], 500, 2) == 1  # frees 400 on d rather than 900 on c
    assert best_fit([c, d], 2000, 2) is None
    busy = GpuView(0, 1000, (), 3)
    assert best_fit([busy, d], 50, 1) == 1  # fits without queueing behind three waiters
