"""Sidecars as real processes: started with the supervisor's environment, respawned after a
crash, given up on when they flap, stopped with SIGTERM then SIGKILL of their whole group."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from mlsup.ipc.liveness import process_alive
from mlsup.supervisor.config import SupervisorConfig
from mlsup.supervisor.daemon import Supervisor
from mlsup.supervisor.restart import RestartPolicy
from mlsup.supervisor.sidecars import Sidecars, SidecarSpec
from mlsup.testing.redis import TestRedis
from mlsup.testing.supervisor import manifest

# A sidecar that records "<pid> <supervisor pid> <X_TAG>" in its file, and its SIGTERM.
SCRIPT = """
import os, signal, sys, time
path, mode = sys.argv[1], sys.argv[2]
def on_term(*_):
    with open(path + ".term", "a") as f:
        f.write(f"{os.getpid()}\\n")
    if mode != "stubborn":
        sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
if mode == "family":
    child = os.fork()
    if child == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(1)
    with open(path + ".child", "w") as f:
        f.write(str(child))
with open(path + ".tmp", "w") as f:
    f.write(f"{os.getpid()} {os.environ['MLSUP_SUPERVISOR_PID']} {os.environ.get('X_TAG')}")
os.replace(path + ".tmp", path)
if mode == "flap":
    sys.exit(3)
while True:
    time.sleep(1)
"""


def spec(path: Path, mode: str = "plain", grace: float = 5.0) -> SidecarSpec:
    return SidecarSpec(
        name=f"probe-{mode}",
        argv=(sys.executable, "-c", SCRIPT, str(path), mode),
        env={"X_TAG": "tagged"},
        stop_grace_s=grace,
    )


async def started(path: Path, not_pid: int | None = None, timeout: float = 20) -> list[str]:
    """The sidecar's record once a process other than ``not_pid`` wrote it."""
    deadline = time.monotonic() + timeout
    while True:
        if path.exists():
            fields = path.read_text().split()
            if int(fields[0]) != not_pid:
                return fields
        assert time.monotonic() < deadline, f"the sidecar never wrote {path}"
        await asyncio.sleep(0.02)


async def gone(pid: int, timeout: float = 10) -> None:
    """Wait until pid is dead: a signal is delivered after kill() returns."""
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        assert time.monotonic() < deadline, f"pid {pid} survived SIGKILL of its group"
        await asyncio.sleep(0.01)


def fast_policy() -> RestartPolicy:
    return RestartPolicy(initial_s=0.05, max_crashes=2, window_s=60)


async def test_started_with_env_respawned_after_sigkill_and_stopped_with_sigterm(
    tmp_path: Path,
) -> None:
    record = tmp_path / "plain"
    lines: list[str] = []
    sidecars = Sidecars([spec(record)], log=lines.append, policy=fast_policy)
    await sidecars.start()
    try:
        pid, supervisor_pid, tag = await started(record)
        assert (int(supervisor_pid), tag) == (os.getpid(), "tagged")
        assert sidecars.pids() == {"probe-plain": int(pid)}

        os.kill(int(pid), signal.SIGKILL)
        new_pid, _, _ = await started(record, not_pid=int(pid))
        assert sidecars.restarts() == {"probe-plain": 1}
        assert any("exited with signal SIGKILL; respawning" in line for line in lines), lines
    finally:
        await sidecars.stop()
    assert (tmp_path / "plain.term").read_text().split() == [new_pid]
    assert not process_alive(int(new_pid))
    assert any(f"pid {new_pid} exited with code 0" in line for line in lines), lines


async def test_a_flapping_sidecar_is_given_up_on(tmp_path: Path) -> None:
    record = tmp_path / "flap"
    lines: list[str] = []
    sidecars = Sidecars([spec(record, "flap")], log=lines.append, policy=fast_policy)
    await sidecars.start()
    try:
        task = sidecars._sidecars[0].task
        assert task is not None
        await asyncio.wait_for(task, 30)
        assert sidecars.pids() == {"probe-flap": None}
        assert sidecars.restarts() == {"probe-flap": 2}
        assert "exited with code 3" in lines[-1] and "giving up" in lines[-1], lines
    finally:
        await sidecars.stop()


async def test_a_stubborn_sidecar_and_its_children_are_killed_after_the_grace(
    tmp_path: Path,
) -> None:
    record = tmp_path / "family"
    lines: list[str] = []
    stubborn = spec(record, "stubborn", grace=0.3)
    family = spec(record, "family", grace=5.0)
    sidecars = Sidecars([stubborn], log=lines.append, policy=fast_policy)
    await sidecars.start()
    pid, _, _ = await started(record)
    await sidecars.stop()
    assert (tmp_path / "family.term").read_text().split() == [pid]  # it got SIGTERM first...
    assert not process_alive(int(pid))  # ...and SIGKILL after ignoring it
    assert any("killing it" in line for line in lines), lines

    record.unlink()
    sidecars = Sidecars([family], log=lines.append, policy=fast_policy)
    await sidecars.start()
    await started(record)
    child = int((tmp_path / "family.child").read_text())
    assert process_alive(child)
    await sidecars.stop()
    await gone(child)  # the group went with its leader


@pytest.mark.slow
async def test_the_supervisor_starts_its_sidecars_after_the_control_plane_and_stops_them(
    tmp_path: Path, redis_server: TestRedis, redis_prefix: str, runtime_dir: Path
) -> None:
    path = tmp_path / "mlsup.toml"
    path.write_text(manifest(redis_server.url, redis_prefix, ""))
    record = tmp_path / "with-supervisor"
    lines: list[str] = []
    supervisor = Supervisor(SupervisorConfig.load(path), log=lines.append, sidecars=[spec(record)])
    await supervisor.start()
    serving = asyncio.ensure_future(supervisor.serve())
    try:
        pid, supervisor_pid, _ = await started(record)
        assert int(supervisor_pid) == os.getpid()
        assert supervisor.paths.control.exists()  # the control plane came first
    finally:
        supervisor.stop()
        await asyncio.wait_for(serving, 60)
    assert (tmp_path / "with-supervisor.term").read_text().split() == [pid]
    stopped = next(i for i, line in enumerate(lines) if "stopped" in line or "exited" in line)
    draining = next(i for i, line in enumerate(lines) if "draining every model" in line)
    assert stopped < draining, lines  # the sidecars stop before the models drain
