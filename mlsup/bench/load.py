"""``mlsup bench load``: cold start to first result, and warm worker start.

For each loader kind (:data:`~mlsup.bench.workloads.WORKLOADS`):

* supervised: lease + spawn + load + first call through a running supervisor, split into
  those phases by the model's status ``timeline``;
* vs a fresh Python (``python -m mlsup.bench.workloads KIND``: import + load + first call;
  target: supervised <= 1.0x);
* vs a load + first call in this warm process (the runtime already imported; target:
  supervised <= 2.5x);
* the first load right after ``mlsup start`` vs the same load again (the template is ready
  before the supervisor says it is).

Warm worker start: a process from a template that preloaded the runtimes (multiprocessing
``forkserver``, as the supervisor does) vs the ``spawn`` context, both running the same
function, timed until that function runs (target <= 15 ms).
"""

from __future__ import annotations

import multiprocessing
import statistics
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

from mlsup.bench.rows import Row, gpu_count, not_run, percentile
from mlsup.bench.supervised import (
    Usage,
    median_usage,
    phases,
    probe_model,
    supervisor,
    timed,
    usage_note,
)
from mlsup.bench.workloads import WORKLOADS, Workload
from mlsup.errors import BenchmarkError

__all__ = ["run"]

SUITE = "load"
PHASES = ("lease", "spawn", "load", "first call")
#: Goal for a supervised cold start against a load + first call in a warm process.
WARM_RATIO = 2.5
#: Goal for the first load after ``mlsup start`` against the same load again.
FIRST_RATIO = 2.0


def _supervised(running: Any, workload: Workload) -> tuple[float, dict[str, float], Usage]:
    """Seconds to the first result, its phases, and the worker's usage up to it."""
    with running.client(timeout=300) as sup:
        started = time.monotonic()
        workload.call(sup.model(workload.kind))
        done = time.monotonic()
        row = next(r for r in sup.status() if r["model"] == workload.kind)
        used = Usage.of(row["pid"])
        sup.unload(workload.kind)
    return done - started, phases(started, row, done), used


def _fresh_python(workload: Workload) -> float:
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "mlsup.bench.workloads", workload.kind],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    elapsed = time.monotonic() - started
    if process.wait(60) != 0 or line != "done":
        raise BenchmarkError(f"the fresh-Python load of {workload.kind} failed")
    return elapsed


def _warm_in_process(workload: Workload) -> tuple[float, Usage]:
    """Seconds for a load + first call in this process, and this process's usage for it."""
    before = Usage.here()
    started = time.monotonic()
    loader, model = workload.load()
    workload.call(model)
    elapsed = time.monotonic() - started
    used = Usage.here() - before
    loader.unload()
    return elapsed, used


def _warm_note(parts: dict[str, float], warm_ms: float, worker: Usage, warm: Usage) -> str:
    """Where a supervised cold start spends the time a warm process does not (medians)."""
    return (
        f"phases: {', '.join(f'{p} {ms:.0f} ms' for p, ms in parts.items())}; a warm process "
        f"loads and calls in {warm_ms:.0f} ms (measured in this run). {usage_note(worker, warm)}"
    )


def _cold_rows(workload: Workload, running: Any, repeat: int) -> list[Row]:
    supervised, split, fresh, warm = [], [], [], []
    worker_use, warm_use = [], []
    workload.load()[0].unload()  # import the runtime here once: the warm baseline is warm
    for _ in range(repeat):
        total, parts, used = _supervised(running, workload)
        supervised.append(total)
        split.append(parts)
        worker_use.append(used)
        fresh.append(_fresh_python(workload))
        elapsed, used = _warm_in_process(workload)
        warm.append(elapsed)
        warm_use.append(used)
    value, fresh_s, warm_s = (statistics.median(s) * 1e3 for s in (supervised, fresh, warm))
    parts = {p: statistics.median(s[p] for s in split) * 1e3 for p in PHASES}
    met = value <= fresh_s
    note = None
    if not met:
        top = max(parts, key=lambda p: parts[p])
        note = (
            f"the supervised path took {value - fresh_s:.0f} ms longer than a fresh Python; its "
            f"largest phase is {top} ({parts[top]:.0f} ms); phases: "
            + ", ".join(f"{p} {ms:.0f} ms" for p, ms in parts.items())
        )
    name = f"cold start {workload.kind} ({workload.loader})"
    why = _warm_note(parts, warm_s, median_usage(worker_use), median_usage(warm_use))
    rows = [
        Row(SUITE, name, "ms", value, "fresh Python: import + load + call", fresh_s,
            "<= 1.0x", met, note, tuple(supervised), tuple(fresh)),
        Row(SUITE, f"{name} vs warm process", "ms", value, "load + call in a warm process",
            warm_s, f"<= {WARM_RATIO:g}x", value <= WARM_RATIO * warm_s, why,
            tuple(supervised), tuple(warm)),
    ]  # fmt: skip
    rows += [Row(SUITE, f"{name}: {p} phase", "ms", ms) for p, ms in parts.items()]
    return rows


def _first_request_rows(running: Any) -> list[Row]:
    """The first load right after ``mlsup start`` answered, against the same load again: the
    supervisor says it is ready only once its template has imported everything."""
    with running.client(timeout=300) as sup:
        first = timed(lambda: sup.load("probe"))[0] * 1e3
        sup.unload("probe")
        again = timed(lambda: sup.load("probe"))[0] * 1e3
        sup.unload("probe")
    met = first <= FIRST_RATIO * again
    return [
        Row(SUITE, "first load after start (probe)", "ms", first, "the same load again", again,
            f"<= {FIRST_RATIO:g}x", met),
    ]  # fmt: skip


def _started(conn: Connection) -> None:
    """The worker function of the warm-start rows: say "running" and exit."""
    conn.send(time.monotonic())
    conn.close()


def _start_ms(context: Any, repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        receive, send = multiprocessing.Pipe(duplex=False)
        process = context.Process(target=_started, args=(send,))
        started = time.monotonic()
        process.start()
        running_at: float = receive.recv()
        samples.append((running_at - started) * 1e3)
        process.join()
        send.close()
        receive.close()
    return samples


def _warm_start_rows(repeat: int) -> list[Row]:
    from mlsup.supervisor.template import ALWAYS_PRELOAD

    template = multiprocessing.get_context("forkserver")
    template.set_forkserver_preload([*ALWAYS_PRELOAD, "mlsup.bench.load"])
    _start_ms(template, 1)  # start the template itself (the supervisor does so at start)
    warm = _start_ms(template, repeat)
    plain = _start_ms(multiprocessing.get_context("spawn"), max(3, repeat // 4))
    value = statistics.median(warm)
    note = None
    if value > 15:
        note = f"p50 {value:.1f} ms, p99 {percentile(warm, 99):.1f} ms from fork to the function"
    return [
        Row(SUITE, "warm worker start p50 (template fork)", "ms", value,
            "multiprocessing spawn, same function", statistics.median(plain), "<= 15 ms",
            value <= 15, note, tuple(warm), tuple(plain)),
    ]  # fmt: skip


def run(quick: bool = False) -> list[Row]:
    """Cold starts of every loader kind and the warm worker start; ``quick``: one of each."""
    repeat = 1 if quick else 3
    models = "".join(w.manifest() for w in WORKLOADS) + probe_model()
    rows: list[Row] = []
    with supervisor(models) as running:
        rows += _first_request_rows(running)
        for workload in WORKLOADS:
            rows += _cold_rows(workload, running, repeat)
    rows += _warm_start_rows(10 if quick else 100)
    name = "cold start on a real GPU (NVML-measured VRAM)"
    why = "no GPU" if gpu_count() == 0 else "the simulated-GPU bench does not drive real VRAM yet"
    rows.append(not_run(SUITE, name, "ms", why))
    return rows
