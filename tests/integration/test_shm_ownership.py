"""Segments of a process killed with SIGKILL are swept; nothing else is touched."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from mlsup.ipc.shm import sweep_orphans

from .ipc_helpers import our_segments

OWNER = """
import os, sys
from mlsup.ipc.shm import ShmPool
pool = ShmPool()
names = [pool.lend(n).name for n in (1 << 20, 5 << 20, 1 << 20)]
pool.give_back(names[0])  # one free, two lent: all must go
print(" ".join(names), flush=True)
sys.stdin.read()
"""


def test_sigkill_then_sweep_leaves_dev_shm_as_it_was() -> None:
    sweep_orphans()  # start from a clean slate: only live owners' segments
    before = set(os.listdir("/dev/shm"))
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert owner.stdout is not None
    names = owner.stdout.readline().split()
    assert len(names) == 3 and set(names) <= our_segments(owner.pid)
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    assert set(names) <= set(os.listdir("/dev/shm")), "SIGKILL leaves the segments behind"
    removed = sweep_orphans()
    assert set(names) <= set(removed)
    assert set(os.listdir("/dev/shm")) == before


def test_sweep_ignores_a_reused_pid_with_another_start_time() -> None:
    # A segment named after our pid but an older start time: its creator is gone, even though
    # a process with that pid (us) is alive.
    name = f"mlsup-{os.getpid()}-1-0123456789abcdef"
    fd = os.open(f"/dev/shm/{name}", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    os.close(fd)
    try:
        assert name in sweep_orphans()
    finally:
        if os.path.exists(f"/dev/shm/{name}"):
            os.unlink(f"/dev/shm/{name}")
