"""The chaos bench's call-load accounting: overruns, hung calls and recovery, with a scripted
model (no processes)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from mlsup.bench.chaos_tools import OVERRUN_S, CallLoad, LeaseWatch
from mlsup.errors import RequestTimeout


class Scripted:
    """A model whose calls block until released, then answer or fail."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.fail = False

    def run(self, inputs: dict[str, Any]) -> dict[str, Any]:
        self.gate.wait()
        if self.fail:
            raise RequestTimeout("scripted")
        return inputs


def test_overruns_hung_calls_and_recovery_are_counted_from_records() -> None:
    load = CallLoad(Scripted(), deadline=1.0)
    now = time.monotonic()
    load.calls = [
        (now - 10, 0.5, None),
        (now - 9, 1.0 + OVERRUN_S / 2, "RequestTimeout"),  # within the bound
        (now - 8, 1.0 + OVERRUN_S * 2, "RequestTimeout"),  # over it
        (now - 2, 0.2, None),
    ]
    load.running = {1: now - 100.0, 2: now - 0.5}  # one far past its deadline, one not
    assert load.overruns == 1
    assert load.hung == 1
    assert abs(load.worst_overrun_ms - OVERRUN_S * 2 * 1e3) < 1e-6
    assert load.served_after(now - 5) == pytest.approx(3.2)  # the call started at now - 2
    assert load.served_after(now) is None


def test_a_live_load_records_every_call() -> None:
    model = Scripted()
    load = CallLoad(model, deadline=5.0, threads=2).start()
    model.fail = True
    model.gate.set()
    deadline = time.monotonic() + 10
    while len(load.calls) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    load.stop()
    assert len(load.calls) >= 4
    assert {outcome for _, _, outcome in load.calls} == {"RequestTimeout"}
    assert load.hung == 0 and not load.running


def scripted(*answers: bool) -> Any:
    """A predicate that gives ``answers`` in turn, then the last one for ever."""
    it = iter(answers)
    last = [answers[-1]]

    def answer() -> bool:
        last[0] = next(it, last[0])
        return last[0]

    return answer


def test_a_worker_seen_alive_after_its_lease_was_seen_free_ran_unleased() -> None:
    watch = LeaseWatch().observe(scripted(True), scripted(True, True, True, False), timeout=5)
    assert watch.lease_free_at is not None and watch.worker_gone_at is not None
    unleased = watch.unleased_s
    assert unleased is not None and unleased > 0


def test_a_worker_gone_before_its_lease_was_seen_free_never_ran_unleased() -> None:
    # The worker ends in the first round, the lease is seen free only in the third: the time
    # between the looks is not counted (two sequential loops counted it).
    watch = LeaseWatch().observe(scripted(False, False, True), scripted(False), timeout=5)
    assert watch.unleased_s == 0.0
    watch = LeaseWatch().observe(scripted(False, True), scripted(True, False), timeout=5)
    assert watch.unleased_s == 0.0


def test_a_lease_never_seen_free_has_no_figure() -> None:
    watch = LeaseWatch().observe(scripted(False), scripted(False), timeout=0.05)
    assert watch.unleased_s is None
