"""The supervisor's pure logic: lifecycle table and restart policy."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlsup.supervisor.restart import RestartPolicy
from mlsup.supervisor.states import (
    TRANSITIONS,
    Event,
    IllegalTransition,
    ModelState,
    next_state,
)


def test_the_happy_path() -> None:
    state = ModelState.UNLOADED
    for event in (Event.LOAD, Event.LEASE_GRANTED, Event.WORKER_READY):
        state = next_state(state, event)
    assert state is ModelState.READY
    assert next_state(state, Event.DRAIN) is ModelState.DRAINING
    assert next_state(ModelState.DRAINING, Event.DRAINED) is ModelState.UNLOADED


def test_crash_loop_ends_in_failed_and_only_load_leaves_it() -> None:
    assert next_state(ModelState.READY, Event.WORKER_EXITED) is ModelState.BACKOFF
    assert next_state(ModelState.BACKOFF, Event.GAVE_UP) is ModelState.FAILED
    leaving = {event for (state, event) in TRANSITIONS if state is ModelState.FAILED}
    assert leaving == {Event.LOAD}


@pytest.mark.parametrize(
    ("state", "event"),
    [pair for pair in itertools.product(ModelState, Event) if pair not in TRANSITIONS],
)
def test_every_unlisted_pair_is_illegal(state: ModelState, event: Event) -> None:
    with pytest.raises(IllegalTransition, match=event.value):
        next_state(state, event)


def test_every_state_is_reachable_and_can_get_back_to_unloaded() -> None:
    reachable = {ModelState.UNLOADED}
    frontier = [ModelState.UNLOADED]
    while frontier:
        state = frontier.pop()
        for (source, _), target in TRANSITIONS.items():
            if source is state and target not in reachable:
                reachable.add(target)
                frontier.append(target)
    assert reachable == set(ModelState)
    for state in ModelState:
        seen, frontier = {state}, [state]
        while frontier:
            current = frontier.pop()
            for (source, _), target in TRANSITIONS.items():
                if source is current and target not in seen:
                    seen.add(target)
                    frontier.append(target)
        assert ModelState.UNLOADED in seen, state


def test_a_first_crash_respawns_at_once_then_backoff_grows_up_to_the_cap() -> None:
    policy = RestartPolicy(initial_s=0.5, factor=2, max_s=3, max_crashes=10, window_s=100)
    delays = [policy.crashed(now=float(t)).delay_s for t in range(7)]
    assert delays == [0.0, 0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_more_than_max_crashes_within_the_window_gives_up() -> None:
    policy = RestartPolicy(max_crashes=3, window_s=10)
    decisions = [policy.crashed(now=t) for t in (0.0, 1.0, 2.0, 3.0)]
    assert [d.give_up for d in decisions] == [False, False, False, True]
    assert decisions[-1].crashes == 4


def test_old_crashes_fall_out_of_the_window() -> None:
    policy = RestartPolicy(max_crashes=2, window_s=10, initial_s=1, factor=2)
    policy.crashed(0.0)
    policy.crashed(1.0)
    late = policy.crashed(20.0)
    assert not late.give_up and late.crashes == 1 and late.delay_s == 0


def test_reset_forgets() -> None:
    policy = RestartPolicy(max_crashes=1, window_s=10)
    policy.crashed(0.0)
    policy.reset()
    assert not policy.crashed(1.0).give_up


@given(st.lists(st.floats(0, 1000, allow_nan=False), min_size=1, max_size=50))
def test_policy_invariants(times: list[float]) -> None:
    policy = RestartPolicy(max_crashes=5, window_s=60, initial_s=0.5, max_s=30)
    for now in sorted(times):
        decision = policy.crashed(now)
        assert 0 <= decision.delay_s <= 30
        assert decision.give_up == (decision.crashes > 5)
        assert 1 <= decision.crashes <= len(times)
