"""The load suite's per-process usage (CPU, page faults), read from /proc for a worker."""

from __future__ import annotations

import mmap
import subprocess
import sys

from mlsup.bench.supervised import Usage

# Touches each small page of 64 MiB once and waits to be read.
CHILD = (
    "import mmap, sys; m = mmap.mmap(-1, 64 << 20); m.madvise(mmap.MADV_NOHUGEPAGE)\n"
    "for i in range(0, 64 << 20, mmap.PAGESIZE): m[i] = 1\n"
    "print('ready', flush=True); sys.stdin.read()"
)


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
    size, page = 16 << 20, mmap.PAGESIZE
    # Small pages for certain: with transparent huge pages, one fault maps 2 MiB.
    data = mmap.mmap(-1, size)
    data.madvise(mmap.MADV_NOHUGEPAGE)
    before = Usage.here()
    for offset in range(0, size, page):
        data[offset] = 1
    after = Usage.here()
    spent = after - before
    data.close()
    assert spent.faults >= size // page * 0.9 and spent.cpu_s >= 0
    assert (after - after) == Usage(0.0, 0)
