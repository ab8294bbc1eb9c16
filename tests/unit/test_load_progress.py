"""A loading worker's progress through its model's files, measured in its own process."""

from __future__ import annotations

import mmap
import threading
from pathlib import Path

from mlsup.kit.load_progress import LoadMeter, LoadProgress, model_bytes, report_while

SIZE = 4 << 20


def _weights(path: Path, size: int = SIZE) -> Path:
    path.write_bytes(bytes(range(256)) * (size // 256))
    return path


def test_model_bytes_of_a_file_a_directory_and_nothing(tmp_path: Path) -> None:
    _weights(tmp_path / "a.bin", 1 << 20)
    (tmp_path / "sub").mkdir()
    _weights(tmp_path / "sub" / "b.bin", 2 << 20)
    assert model_bytes(tmp_path / "a.bin") == 1 << 20
    assert model_bytes(tmp_path) == 3 << 20
    assert model_bytes(tmp_path / "missing") == 0


def test_reading_the_file_advances_to_the_total(tmp_path: Path) -> None:
    path = _weights(tmp_path / "model.bin")
    meter = LoadMeter(path)
    assert meter.measure().read < SIZE  # written, not yet read
    with open(path, "rb") as weights:
        while weights.read(1 << 20):
            pass
    assert meter.measure() == LoadProgress(SIZE, SIZE)


def test_mapped_and_touched_weights_count(tmp_path: Path) -> None:
    path = _weights(tmp_path / "model.bin")
    meter = LoadMeter(tmp_path)  # a model directory
    with open(path, "rb") as weights, mmap.mmap(weights.fileno(), 0, access=mmap.ACCESS_READ) as m:
        half = SIZE // 2
        checksum = sum(m[i + 1] for i in range(0, half, mmap.PAGESIZE))  # touch the first half
        progress = meter.measure()
    assert checksum > 0
    assert half <= progress.read <= SIZE and progress.total == SIZE


def test_reports_stop_when_asked_and_none_come_after(tmp_path: Path) -> None:
    meter = LoadMeter(_weights(tmp_path / "model.bin"))
    reported: list[LoadProgress] = []
    first = threading.Event()

    def report(progress: LoadProgress) -> None:
        reported.append(progress)
        first.set()

    stop = report_while(meter, report, interval=0.001)
    assert first.wait(10)
    stop()
    assert all(p.total == SIZE for p in reported)
    names = {thread.name for thread in threading.enumerate()}
    assert "mlsup-load-progress" not in names  # stop() joined it: nothing reports later
