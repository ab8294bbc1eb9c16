"""Clients don't leak shared memory: a client that exits without close() unlinks its pool's
segments, and a SIGKILLed client's are swept by the running supervisor (issue 14, item 5)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlsup.bench.supervised import probe_model
from mlsup.ipc.shm import sweep_orphans
from mlsup.testing.redis import TestRedis

from .ipc_helpers import Peer, our_segments
from .supervisor_helpers import RunningSupervisor, manifest

PROBE = probe_model("probe", vram_mb=100, idle_timeout_s=0)

#: Sends a 4 MiB array (through shared memory), prints its segments, then exits without
#: close() -- or, given "wait", blocks until killed.
SENDER = """
import os, sys
import numpy as np
import mlsup
from mlsup.ipc.client import Client

target, mode = sys.argv[1], sys.argv[2]
array = np.ones(4 << 20, dtype=np.uint8)
if target.startswith("ipc://"):
    client = Client(target, timeout=30)
    assert client.call("echo", array).nbytes == array.nbytes
else:
    sup = mlsup.connect(target, timeout=30)
    assert sup.model("probe").run({"x": array})["x"].nbytes == array.nbytes
mine = [n for n in os.listdir("/dev/shm") if n.startswith(f"mlsup-{os.getpid()}-")]
print(" ".join(mine), flush=True)
if mode == "wait":
    sys.stdin.read()
"""


def run_sender(target: str, mode: str) -> tuple[subprocess.Popen[str], list[str]]:
    sender = subprocess.Popen(
        [sys.executable, "-c", SENDER, target, mode],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert sender.stdout is not None
    names = sender.stdout.readline().split()
    assert names, "the sender made no segment: the array did not travel by shared memory"
    return sender, names


def test_a_client_exiting_without_close_unlinks_its_segments(peer: Peer) -> None:
    sender, names = run_sender(peer.endpoint, "exit")
    assert sender.wait(30) == 0
    assert not set(names) & our_segments(sender.pid)


@pytest.fixture
def supervisor(
    tmp_path: Path, redis_server: TestRedis, redis_prefix: str
) -> Iterator[RunningSupervisor]:
    running = RunningSupervisor(tmp_path, manifest(redis_server.url, redis_prefix, PROBE)).start()
    yield running
    running.stop()
    sweep_orphans()


def test_a_proxy_client_exiting_without_close_unlinks_its_segments(
    supervisor: RunningSupervisor,
) -> None:
    sender, names = run_sender(str(supervisor.runtime), "exit")
    assert sender.wait(30) == 0
    assert not set(names) & our_segments(sender.pid)


def test_a_sigkilled_clients_segments_are_swept_by_the_running_supervisor(
    supervisor: RunningSupervisor,
) -> None:
    sender, names = run_sender(str(supervisor.runtime), "wait")
    sender.send_signal(signal.SIGKILL)
    sender.wait()
    assert set(names) <= our_segments(sender.pid), "SIGKILL runs no finalizer"
    deadline = time.monotonic() + 30  # a few sweep intervals, on a loaded machine
    while set(names) & our_segments(sender.pid):
        assert time.monotonic() < deadline, f"not swept:\n{supervisor.output()}"
        time.sleep(0.1)
    # Swept while the supervisor runs (its log says so, unless another process on this shared
    # machine, such as a test fixture's sweep, got there first).
    assert supervisor.process is not None and supervisor.process.poll() is None
