"""Who may still use a lease's VRAM: the ``users`` field's format and the reaping decision,
and which of a dead supervisor's leases its successor may release (pure)."""

from __future__ import annotations

from collections.abc import Callable

from mlsup.kit.leases.owner import HolderIdentity, encode_users, parse_users
from mlsup.process_identity import ProcessIdentity
from mlsup.supervisor.recovery import LeaseRecord, WorkerRecord, still_in_use

WORKER = ProcessIdentity(4242, "18c3f0a1b2")
OTHER = ProcessIdentity(4343, "18c3f0a1b3")


def test_users_round_trip_through_the_field() -> None:
    assert encode_users([]) == ""
    assert parse_users("") == ()
    assert parse_users(encode_users([WORKER, OTHER])) == (WORKER, OTHER)


def test_malformed_users_name_no_process() -> None:
    assert parse_users("x:1,:ab,12,13:,4242:18c3f0a1b2") == (WORKER,)


def alive_set(*alive: tuple[int, str]) -> Callable[[int, str], bool]:
    return lambda pid, start: (pid, start) in alive


def test_a_lease_is_dead_only_when_its_owner_and_every_user_are() -> None:
    holder = HolderIdentity("L", 100, "aa", encode_users([WORKER, OTHER]))
    assert not holder.dead(alive_set((100, "aa")))  # owner alive
    assert not holder.dead(alive_set((WORKER.pid, WORKER.token)))  # owner dead, a user alive
    assert not holder.dead(alive_set((OTHER.pid, OTHER.token)))
    assert holder.dead(alive_set())  # nobody left
    # A reused pid with another start time is not the recorded user.
    assert holder.dead(alive_set((WORKER.pid, "ffff")))


def test_a_lease_without_users_is_dead_with_its_owner() -> None:
    assert HolderIdentity("L", 100, "aa").dead(alive_set())
    assert not HolderIdentity("L", 100, "aa").dead(alive_set((100, "aa")))


def test_a_successor_keeps_the_leases_whose_old_worker_still_runs() -> None:
    leases = [LeaseRecord("a", "La", "t", 0, 100), LeaseRecord("b", "Lb", "t", 0, 100)]
    workers = [WorkerRecord("a", 1, "aa"), WorkerRecord("b", 2, "bb"), WorkerRecord("c", 3, "")]
    assert still_in_use(leases, workers, alive_set((1, "aa"))) == {"La"}
    assert still_in_use(leases, workers, alive_set()) == set()
    # A worker recorded without a start time (it died at once) names no process.
    assert still_in_use([LeaseRecord("c", "Lc", "t", 0, 1)], workers, lambda p, s: True) == set()
