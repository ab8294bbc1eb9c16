"""The dead supervisor's state file, read once for both the clean-up and the lease release."""

from __future__ import annotations

from pathlib import Path

from mlsup.supervisor.config import RuntimePaths
from mlsup.supervisor.recovery import (
    LeaseRecord,
    PreviousState,
    WorkerRecord,
    read_previous,
    write_state,
)


def test_the_state_a_supervisor_wrote_is_read_back(tmp_path: Path) -> None:
    paths = RuntimePaths(tmp_path)
    workers = [WorkerRecord("m", 4242, "tok")]
    leases = [LeaseRecord("m", "L1", "secret", 0, 100)]
    write_state(paths, workers, leases)
    assert read_previous(paths) == PreviousState(workers, leases)


def test_no_file_is_nothing_to_do_and_a_bad_one_says_so(tmp_path: Path) -> None:
    paths = RuntimePaths(tmp_path)
    assert read_previous(paths) == PreviousState([], [])
    for text in ("{not json", "[1, 2]", '{"workers": [{"pid": 1}]}'):
        paths.state.write_text(text)
        previous = read_previous(paths)
        assert previous.workers == [] and previous.leases == []
        assert previous.problem is not None
        assert previous.problem.startswith("ignored an unreadable state file")


def test_unreadable_leases_leave_the_workers_to_reap(tmp_path: Path) -> None:
    paths = RuntimePaths(tmp_path)
    paths.state.write_text('{"workers": [{"model": "m", "pid": 7, "start_token": "t"}], '
                           '"leases": [{"bogus": 1}]}')  # fmt: skip
    assert read_previous(paths) == PreviousState([WorkerRecord("m", 7, "t")], [])
