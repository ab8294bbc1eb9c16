"""How far a worker has got reading its model's files, for ``mlsup load``'s progress bar.

No runtime reports its own progress (llama.cpp, safetensors and onnxruntime load in one call),
so the worker measures it from the outside, in its own process: the bytes of the model's files
that are mapped and resident (runtimes that ``mmap`` their weights), or read through ``read()``
since the load began (runtimes that read them), whichever is more, capped at the files' total.
It is an estimate of progress, never a promise: a runtime may touch its weights lazily, and the
bar then completes when the worker reports ready.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from mlsup import defaults

__all__ = ["LoadMeter", "LoadProgress", "model_bytes", "report_while"]


def model_bytes(path: str | Path) -> int:
    """Total size of a model's files: the file, or every file under the directory."""
    root = Path(path).expanduser()
    if root.is_file():
        return root.stat().st_size
    if not root.is_dir():
        return 0
    return sum(entry.stat().st_size for entry in root.rglob("*") if entry.is_file())


@dataclass(frozen=True)
class LoadProgress:
    """Bytes of the model's files loaded so far, of ``total``."""

    read: int
    total: int


class LoadMeter:
    """Measures this process's progress through the files at ``path``."""

    def __init__(self, path: str | Path) -> None:
        self.root = str(Path(path).expanduser().resolve())
        self.total = model_bytes(path)
        self._process = psutil.Process()
        self._chars_at_start = self._chars_read()

    def _chars_read(self) -> int:
        try:
            return int(self._process.io_counters().read_chars)
        except (psutil.Error, AttributeError):
            return 0  # no I/O accounting here: the mapped bytes still count

    def _mapped(self) -> int:
        try:
            maps = self._process.memory_maps(grouped=True)
        except psutil.Error:
            return 0
        return sum(
            m.rss for m in maps if m.path == self.root or m.path.startswith(self.root + os.sep)
        )

    def measure(self) -> LoadProgress:
        """Progress now."""
        read = max(self._mapped(), self._chars_read() - self._chars_at_start)
        return LoadProgress(min(read, self.total), self.total)


def report_while(
    meter: LoadMeter,
    report: Callable[[LoadProgress], None],
    interval: float = defaults.LOAD_PROGRESS_INTERVAL_S,
) -> Callable[[], None]:
    """Report ``meter``'s progress every ``interval`` seconds from a daemon thread, until the
    returned function is called (which waits for the thread: no report comes after it)."""
    done = threading.Event()

    def loop() -> None:
        while not done.wait(interval):
            report(meter.measure())

    thread = threading.Thread(target=loop, name="mlsup-load-progress", daemon=True)
    thread.start()

    def stop() -> None:
        done.set()
        thread.join()

    return stop
