"""Process identity and liveness, against real child processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from mlsup.ipc.liveness import process_alive as process_alive_from_ipc
from mlsup.process_identity import ProcessIdentity, process_alive, same_process, start_token


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    """A child that runs until its stdin closes or it is killed."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    yield process
    if process.poll() is None:
        process.kill()
    process.wait()


def test_a_running_child_is_alive_and_is_itself(child: subprocess.Popen[bytes]) -> None:
    identity = ProcessIdentity.of(child.pid)
    assert identity is not None and identity.pid == child.pid
    assert process_alive(child.pid)
    assert identity.alive() and same_process(child.pid, identity.token)


def test_a_zombie_counts_as_dead(child: subprocess.Popen[bytes]) -> None:
    identity = ProcessIdentity.of(child.pid)
    assert identity is not None
    os.kill(child.pid, signal.SIGKILL)
    # Not reaped yet: wait for the kernel to make it a zombie without reaping it.
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
    assert not process_alive(child.pid)
    assert start_token(child.pid) is None
    assert not identity.alive()
    assert ProcessIdentity.of(child.pid) is None


def test_a_reaped_child_is_gone(child: subprocess.Popen[bytes]) -> None:
    identity = ProcessIdentity.of(child.pid)
    assert identity is not None
    child.kill()
    child.wait()
    assert not process_alive(child.pid)
    assert not identity.alive()


def test_a_reused_pid_is_another_process() -> None:
    me = ProcessIdentity.current()
    started = int(me.token, 16)
    # One centisecond of rounding is the same start; more is a process that reused the pid.
    assert same_process(me.pid, format(started + 1, "x"))
    assert not same_process(me.pid, format(started - 2, "x"))
    assert not same_process(me.pid, "1")


def test_a_malformed_record_names_no_live_process() -> None:
    assert not same_process(os.getpid(), "12.5")
    assert not same_process(os.getpid(), "")


def test_the_transport_checks_liveness_the_same_way() -> None:
    assert process_alive_from_ipc is process_alive
