"""``mlsup bench proxy``: the proxy's cost, against raw pyzmq and in-process models.

* no-op (the probe model's ``run({})``) and small-embed (probe ``embed``) round trips through
  ``mlsup.connect()`` vs raw pyzmq REQ/REP in another process, same run (targets <= 1.3x and,
  since the probe computes its embedding where the raw peer computes nothing, <= 1.5x);
* a 4 MiB array in and out through the proxy (target <= 1 ms);
* real MiniLM embed and SmolLM2 greedy generation through the proxy vs the same model loaded in
  this process, same run (targets <= 1.05x and <= 1.03x);
* a CUDA tensor round trip (GPU only).

Supervised and baseline calls alternate in blocks, so that machine noise hits both alike.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import zmq

from mlsup.bench.ipc import latencies, peer
from mlsup.bench.rows import Row, gpu_count, not_run, percentile
from mlsup.bench.supervised import probe_model, supervisor
from mlsup.bench.workloads import by_kind
from mlsup.testing.loaders import ProbeModel

__all__ = ["run"]

SUITE = "proxy"
MiB = 1 << 20


def interleaved(
    ours: Callable[[], object], base: Callable[[], object], count: int, blocks: int = 4
) -> tuple[list[float], list[float]]:
    """Latencies (s) of ``count`` calls each, alternating ``blocks`` blocks, after a warm-up
    (the first calls of a fresh process are slow: lazy runtime initialization)."""
    for _ in range(3):
        ours()
        base()
    mine: list[float] = []
    theirs: list[float] = []
    per_block = max(1, count // blocks)
    for _ in range(blocks):
        theirs += latencies(base, per_block)
        mine += latencies(ours, per_block)
    return mine, theirs


def compare(
    name: str,
    ours: list[float],
    base: list[float],
    baseline: str,
    limit: float,
    *,
    explain: Callable[[float], str] | None = None,
) -> Row:
    """A p50 latency row (ms) judged as ``ratio <= limit``; ``explain(overhead_ms)`` gives the
    measured reason when the target is missed."""
    value, base_value = percentile(ours, 50) * 1e3, percentile(base, 50) * 1e3
    met = value <= limit * base_value
    note = None if met or explain is None else explain(value - base_value)
    return Row(
        SUITE, name, "ms", value, baseline, base_value, f"<= {limit:g}x", met, note,
        tuple(ours), tuple(base),
    )  # fmt: skip


def _worker_cpu_us(worker: psutil.Process, call: Callable[[], object], count: int) -> float:
    """CPU the worker process spends per call (microseconds, all its threads), over count."""
    times = worker.cpu_times()
    before = times.user + times.system
    for _ in range(count):
        call()
    times = worker.cpu_times()
    return (times.user + times.system - before) / count * 1e6


def _transport_rows(
    sup_model: Any, worker: psutil.Process, directory: Path, count: int
) -> tuple[list[Row], float]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    rows = []
    with peer("rep", directory) as endpoint:
        raw = context.socket(zmq.REQ)
        raw.connect(endpoint)

        def raw_call(payload: bytes) -> Callable[[], object]:
            def call() -> object:
                raw.send(payload)
                return raw.recv()

            return call

        try:
            noop, noop_raw = interleaved(lambda: sup_model.run({}), raw_call(b"{}"), count)
            embed, embed_raw = interleaved(
                lambda: sup_model.embed(["hello world"]), raw_call(b"x" * 64), count
            )
        finally:
            raw.close(linger=0)
    noop_ms = percentile(noop, 50) * 1e3
    # What the model itself spends on the embed, in-process: the raw peer computes nothing.
    model = ProbeModel(8)
    compute_us = percentile(latencies(lambda: model.embed(["hello world"]), count), 50) * 1e6
    # And in the worker, between calls that leave its caches to the other processes: the
    # worker's CPU per embed beyond its CPU per no-op.
    calls = max(20, count // 4)
    worker_noop_us = _worker_cpu_us(worker, lambda: sup_model.run({}), calls)
    worker_embed_us = _worker_cpu_us(worker, lambda: sup_model.embed(["hello world"]), calls)

    def why(overhead_ms: float) -> str:
        return (
            f"the proxy adds {overhead_ms * 1e3:.0f} us over raw REQ/REP (measured in this "
            "run): msgpack framing, validation and dispatch in Python on both sides, where the "
            "raw peer only echoes bytes (the ipc suite's round-trip note gives the CPU per call)"
        )

    def why_embed(overhead_ms: float) -> str:
        return (
            f"{why(overhead_ms)}; of it, the probe model's own embed takes {compute_us:.0f} us "
            f"in a hot loop in-process, and in the worker {worker_embed_us:.0f} us of CPU per "
            f"embed against {worker_noop_us:.0f} us per no-op (measured in this run): the probe "
            "computes, the raw peer only echoes bytes. The reply array travels inline (no "
            "descriptor, no frame)"
        )

    baseline = "raw pyzmq REQ/REP"
    rows.append(
        compare("no-op round trip p50 (probe run({}))", noop, noop_raw, baseline, 1.3, explain=why)
    )
    rows.append(
        compare(
            "small embed round trip p50 (probe)",
            embed,
            embed_raw,
            baseline,
            1.5,  # the goal of issue 15: the model computes here, the raw peer does not
            explain=why_embed,
        )
    )
    return rows, noop_ms


def _array_row(sup_model: Any, count: int) -> Row:
    array = np.random.default_rng(0).integers(0, 255, 4 * MiB, dtype=np.uint8)
    target = np.empty_like(array)

    def through_proxy() -> None:
        out = sup_model.run({"x": array})["x"]
        assert out.nbytes == array.nbytes

    def memcpy_twice() -> None:
        np.copyto(target, array)
        np.copyto(array, target)

    ours, base = interleaved(through_proxy, memcpy_twice, count)
    value = percentile(ours, 50) * 1e3
    met = value <= 1.0
    note = None
    if not met:
        note = (
            f"memcpy of the same 4 MiB in and out takes {percentile(base, 50) * 1e3:.2f} ms here; "
            "the proxy copies it into shared memory and the reply back out, so it cannot beat "
            "that plus a round trip"
        )
    return Row(
        SUITE, "4 MiB array in and out p50", "ms", value, "memcpy in+out in-process",
        percentile(base, 50) * 1e3, "<= 1 ms", met, note, tuple(ours), tuple(base),
    )  # fmt: skip


def _cpu_s(pid: int) -> float:
    """CPU seconds process ``pid`` has used so far (all its threads)."""
    return float(sum(psutil.Process(pid).cpu_times()[:2]))


def _model_row(sup: Any, kind: str, limit: float, count: int, noop_ms: float) -> Row:
    workload = by_kind(kind)
    proxy_model = sup.model(kind)
    loader, model = workload.load()
    workload.call(proxy_model)  # loaded: its worker's pid is in the status row
    worker = int(sup.row(kind)["pid"])
    in_process_s = 0.0

    def in_process() -> None:
        nonlocal in_process_s
        before = time.process_time()  # a clock read: cheap next to the call
        workload.call(model)
        in_process_s += time.process_time() - before

    worker_s = _cpu_s(worker)  # the worker idles while the baseline runs
    try:
        ours, base = interleaved(lambda: workload.call(proxy_model), in_process, count)
    finally:
        loader.unload()
    calls = len(ours) + 3  # and the warm-up calls
    cpu_ms = {"worker": (_cpu_s(worker) - worker_s) * 1e3 / calls}
    cpu_ms["in-process"] = in_process_s * 1e3 / calls

    def why(overhead_ms: float) -> str:
        share = noop_ms / overhead_ms if overhead_ms > 0 else 1.0
        return (
            f"supervised is {overhead_ms:.2f} ms slower per call; the proxy's no-op round trip "
            f"measured in this run is {noop_ms:.2f} ms ({share:.0%} of it); CPU per call: the "
            f"worker {cpu_ms['worker']:.1f} ms, in-process {cpu_ms['in-process']:.1f} ms (all "
            f"threads, the runtime's pool too), on {os.cpu_count()} shared cores"
        )

    name = f"{kind} {workload.op} p50 via proxy"
    return compare(name, ours, base, "same model in-process", limit, explain=why)


def _gpu_row() -> Row:
    name = "CUDA tensor 4 MiB in and out (CUDA IPC)"
    if gpu_count() == 0:
        return not_run(SUITE, name, "ms", "no GPU")
    return not_run(SUITE, name, "ms", "the bench does not drive CUDA tensors yet")


def run(quick: bool = False) -> list[Row]:
    """All proxy rows; ``quick`` uses a few calls of each."""
    count, model_count = (40, 8) if quick else (2000, 60)
    with tempfile.TemporaryDirectory(prefix="mlsup-bench-") as tmp:
        directory = Path(tmp)
        os.chmod(directory, 0o700)
        models = probe_model()
        models += by_kind("minilm").manifest() + by_kind("smollm2").manifest()
        with supervisor(models) as running, running.client(timeout=120) as sup:
            for kind in ("probe", "minilm", "smollm2"):
                sup.load(kind)
            probe = sup.model("probe")
            row = sup.row("probe")
            assert row is not None and row["pid"] is not None
            worker = psutil.Process(int(row["pid"]))
            rows, noop_ms = _transport_rows(probe, worker, directory, count)
            rows.append(_array_row(probe, max(20, count // 10)))
            rows.append(_model_row(sup, "minilm", 1.05, model_count, noop_ms))
            rows.append(_model_row(sup, "smollm2", 1.03, max(4, model_count // 4), noop_ms))
    rows.append(_gpu_row())
    return rows
