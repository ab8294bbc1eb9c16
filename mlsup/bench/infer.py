"""``mlsup bench infer``: latency percentiles and throughput of every loader kind, supervised
vs in-process, with 1, 4 and 16 calling threads.

The in-process baseline does what a user of the runtime would do with several threads and one
loaded model: call it from every thread at once where the runtime allows it
(:data:`CONCURRENT_LOADERS`), and hold a lock where it does not. A worker serves its requests
one at a time, so at 4 and 16 callers the supervised side competes with the runtime's own
concurrency. Each (kind, concurrency) runs for a time budget; the two sides take turns.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Any

from mlsup.bench.rows import Row, percentile
from mlsup.bench.supervised import supervisor
from mlsup.bench.workloads import WORKLOADS, Workload

__all__ = ["CONCURRENCY", "run"]

SUITE = "infer"
CONCURRENCY = (1, 4, 16)
#: Loaders whose loaded model serves calls from several threads at once: onnxruntime sessions,
#: torch modules in inference mode with fast tokenizers, CTranslate2 (checked: 4 threads x 5
#: calls each, no error). llama.cpp contexts and diffusers pipelines (whose scheduler keeps
#: per-call state) are not: a user serializes calls on them.
CONCURRENT_LOADERS = frozenset({"onnx", "hf", "whisper"})


def burst(call: Callable[[], object], threads: int, budget_s: float) -> tuple[list[float], float]:
    """``threads`` callers calling until ``budget_s`` has passed (each at least once): every
    call's latency (s) and the throughput (calls/s)."""
    samples: list[float] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + budget_s

    def caller() -> None:
        while True:
            start = time.perf_counter()
            call()
            elapsed = time.perf_counter() - start
            with lock:
                samples.append(elapsed)
            if time.monotonic() >= stop_at:
                return

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(caller) for _ in range(threads)]:
            future.result()
    return samples, len(samples) / (time.perf_counter() - started)


def _baseline(workload: Workload) -> str:
    concurrent = workload.loader in CONCURRENT_LOADERS
    return "in-process (concurrent)" if concurrent else "in-process (serialized)"


def _rows(workload: Workload, threads: int, ours: list[float], base: list[float],
          rates: tuple[float, float]) -> list[Row]:  # fmt: skip
    name = f"{workload.kind} {workload.op} x{threads}"
    baseline = _baseline(workload)
    rows = [
        Row(SUITE, f"{name} p{q}", "ms", percentile(ours, q) * 1e3, baseline,
            percentile(base, q) * 1e3,
            samples=tuple(ours) if q == 50 else (), baseline_samples=tuple(base) if q == 50 else ())
        for q in (50, 95, 99)
    ]  # fmt: skip
    rows.append(Row(SUITE, f"{name} throughput", "calls/s", rates[0], baseline, rates[1]))
    return rows


def _measure(workload: Workload, sup: Any, budget_s: float) -> list[Row]:
    proxy_model = sup.model(workload.kind)
    loader, model = workload.load()
    lock = threading.Lock() if workload.loader not in CONCURRENT_LOADERS else nullcontext()

    def in_process() -> object:
        with lock:
            return workload.call(model)

    def supervised() -> object:
        return workload.call(proxy_model)

    rows = []
    try:
        for _ in range(3):  # the first calls of a fresh process are slow on both sides
            supervised()
            in_process()
        for threads in CONCURRENCY:
            ours, our_rate = burst(supervised, threads, budget_s)
            base, base_rate = burst(in_process, threads, budget_s)
            rows += _rows(workload, threads, ours, base, (our_rate, base_rate))
    finally:
        loader.unload()
    return rows


def run(quick: bool = False) -> list[Row]:
    """All kinds at 1, 4 and 16 callers; ``quick`` gives each a fraction of a second."""
    budget_s = 0.3 if quick else 3.0
    rows: list[Row] = []
    with (
        supervisor("".join(w.manifest() for w in WORKLOADS)) as running,
        running.client(timeout=300) as sup,
    ):
        for workload in WORKLOADS:
            sup.load(workload.kind)
            rows += _measure(workload, sup, budget_s)
            sup.unload(workload.kind)  # one model in memory at a time on each side
    return rows
