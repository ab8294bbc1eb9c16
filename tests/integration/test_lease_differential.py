"""The admission script and the Python reference model decide the same, op for op."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mlsup.kit.leases.policy import Holder, Verdict, Waiter, decide_admission, queue_score
from mlsup.kit.leases.scripts import Script, source
from mlsup.testing.redis import TestRedis

CAPACITY = 1000
LONG_MS = 600_000  # nothing expires and no deadline passes during one example


class Model:
    """One GPU as the reference model sees it."""

    def __init__(self) -> None:
        self.holders: dict[str, Holder] = {}
        self.waiters: dict[str, Waiter] = {}
        self.seq = 0

    def admit(self, lease_id: str, vram: int, prio: int) -> tuple[Verdict, int]:
        queued = self.waiters.get(lease_id)
        score = queued.score if queued else queue_score(prio, self.seq + 1)
        decision = decide_admission(
            CAPACITY,
            list(self.holders.values()),
            sorted(self.waiters.values(), key=lambda w: w.score),
            request_id=lease_id,
            vram_mb=vram,
            priority=prio,
            score=score,
        )
        if decision.verdict is Verdict.ADMIT:
            self.waiters.pop(lease_id, None)
            self.holders[lease_id] = Holder(lease_id, vram, prio)
        elif decision.verdict is Verdict.QUEUE:
            if queued is None:
                self.seq += 1
                self.waiters[lease_id] = Waiter(lease_id, vram, prio, queue_score(prio, self.seq))
            for victim in decision.victims:
                self.holders[victim] = replace(self.holders[victim], preempt_pending=True)
        return decision.verdict, len(decision.victims)


ops_st = st.lists(
    st.one_of(
        st.tuples(st.just("new"), st.integers(1, 1100), st.integers(0, 3)),
        st.tuples(st.just("retry"), st.integers(0, 20), st.just(0)),
        st.tuples(st.just("release"), st.integers(0, 20), st.just(0)),
        st.tuples(st.just("leave"), st.integers(0, 20), st.just(0)),
    ),
    min_size=5,
    max_size=40,
)

VERDICTS = {"granted": Verdict.ADMIT, "queued": Verdict.QUEUE, "too_big": Verdict.TOO_BIG}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops_st)
def test_lua_admission_matches_the_reference_model(
    redis_server: TestRedis, ops: list[tuple[str, int, int]]
) -> None:
    prefix = f"{redis_server.prefix()}diff:"
    client = redis_server.client()
    scripts = {s: client.register_script(source(s)) for s in Script}

    def run(script: Script, *args: Any) -> Any:
        return scripts[script](keys=[], args=[prefix, *args])

    model = Model()
    requests: dict[str, tuple[int, int]] = {}
    try:
        run(Script.PUBLISH, 0, CAPACITY, LONG_MS, 1)
        for kind, a, b in ops:
            if kind == "new":
                lease_id = uuid.uuid4().hex[:8]
                requests[lease_id] = (a, b)
            elif kind == "retry" and model.waiters:
                lease_id = sorted(model.waiters)[a % len(model.waiters)]
            elif kind == "release" and model.holders:
                lease_id = sorted(model.holders)[a % len(model.holders)]
                assert run(Script.RELEASE, lease_id, f"t{lease_id}") == [b"ok"]
                del model.holders[lease_id]
                continue
            elif kind == "leave" and model.waiters:
                lease_id = sorted(model.waiters)[a % len(model.waiters)]
                assert run(Script.LEAVE, 0, lease_id) == 1
                del model.waiters[lease_id]
                continue
            else:
                continue
            vram, prio = requests[lease_id]
            reply = run(
                Script.ADMISSION, 0, lease_id, f"t{lease_id}", vram, prio, "m", "o", 1, "h",
                "0", LONG_MS, LONG_MS, LONG_MS, LONG_MS, 12, "new", "",
            )  # fmt: skip
            verdict, victims = model.admit(lease_id, vram, prio)
            assert VERDICTS[reply[0].decode()] is verdict, (kind, lease_id, reply)
            if verdict is Verdict.QUEUE:
                assert reply[3] == victims
                event(f"queued with victims: {victims > 0}")
            pending = {
                lease
                for lease in model.holders
                if client.hexists(f"{prefix}lease:{lease}", "preempt_deadline")
            }
            assert pending == {h.id for h in model.holders.values() if h.preempt_pending}
            queue = [m.decode() for m in client.zrange(f"{prefix}gpu:0:queue", 0, -1)]
            assert queue == [w.id for w in sorted(model.waiters.values(), key=lambda w: w.score)]
            live = {m.decode() for m in client.zrange(f"{prefix}gpu:0:leases", 0, -1)}
            assert live == set(model.holders)
    finally:
        redis_server.cleanup(prefix)
        client.close()
