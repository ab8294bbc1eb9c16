"""The load suite's per-process usage (CPU, page faults), read from /proc for a worker."""

from __future__ import annotations

import subprocess
import sys

from mlsup.bench.supervised import Usage

# Touches 64 MiB (every byte written) and waits to be read.
CHILD = "x = b'\\x01' * (64 << 20); print('ready', flush=True); import sys; sys.stdin.read()"


def test_usage_of_another_process_counts_the_pages_it_touched() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        used = Usage.of(child.pid)
    finally:
        child.communicate("", timeout=30)
    assert used.faults >= (64 << 20) // 4096 * 0.9  # a fresh page faults on its first touch
    assert used.cpu_s > 0


def test_usage_here_grows_and_differences_subtract() -> None:
    before = Usage.here()
    data = bytearray(b"\x01" * (16 << 20))
    after = Usage.here()
    spent = after - before
    assert len(data) == 16 << 20
    assert spent.faults >= (16 << 20) // 4096 * 0.9 and spent.cpu_s >= 0
    assert (after - after) == Usage(0.0, 0)
