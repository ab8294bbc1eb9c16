"""``mlsup bench recovery``: how fast the supervisor gets a model serving again.

* SIGKILL of a worker → serving again: detection latency (kill → the supervisor records the
  exit) and total (kill → a call answered); target: total <= the respawn's own spawn + load +
  50 ms. Each kill is a single crash (the restart window is shorter than the time between
  kills), which the supervisor respawns at once: the row measures the mechanism, not the
  backoff that repeated crashes earn;
* preemption: a high-priority load while a low-priority model holds the GPU → the high one's
  lease granted (and ready);
* idle unload → reload: the idle timeout's detection delay, and the reload to a first result;
* real MiniLM: SIGKILL → served again, seen by a caller, against a load + first call in a warm
  process (target: within 100 ms of it).

All with the probe model (:mod:`mlsup.testing.loaders`), which loads at once, so the rows time
the supervisor itself.
"""

from __future__ import annotations

import os
import signal
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlsup.bench.rows import Row, not_run
from mlsup.bench.supervised import Usage, median_usage, probe_model, supervisor, usage_note
from mlsup.bench.workloads import by_kind
from mlsup.defaults import LEASE_RENEW_INTERVAL_S
from mlsup.errors import BenchmarkError, MlsupError

__all__ = ["run"]

SUITE = "recovery"
IDLE_S = 1.0
#: Every kill a single crash (the restart window is shorter than the time between kills), so
#: that the rows time the respawn, not the backoff or the give-up that repeated crashes earn.
_SINGLE_CRASHES = {"restart_window_s": 0.01, "restart_max_crashes": 1000}
_MODELS = (
    probe_model("crashy")
    + probe_model("low", priority="low", vram_mb=800)
    + probe_model("high", priority="high", vram_mb=800)
    + probe_model("idle", idle_timeout_s=IDLE_S)
)


def _until(predicate: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise BenchmarkError(f"the supervisor did not get there within {timeout:g} s")
        time.sleep(0.002)
    return value


@dataclass
class _Kills:
    """Per SIGKILL (seconds): kill -> served, kill -> exit seen, respawn's spawn + load, and
    the phases; ``failure`` says why the kills stopped early."""

    totals: list[float] = field(default_factory=list)
    detections: list[float] = field(default_factory=list)
    respawns: list[float] = field(default_factory=list)
    phases: list[dict[str, float]] = field(default_factory=list)
    used: list[Usage] = field(default_factory=list)  #: the respawned worker's, to the call
    failure: str | None = None

    def note(self) -> str:
        parts = {k: statistics.median(n[k] for n in self.phases) * 1e3 for k in self.phases[0]}
        return "median phases: " + ", ".join(f"{k} {ms:.1f} ms" for k, ms in parts.items())


def _kill(sup: Any, model_id: str, call: Callable[[], Any], trials: int) -> _Kills:
    kills = _Kills()
    call()
    for trial in range(trials):
        pid = sup.row(model_id)["pid"]
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        try:
            call()  # idempotent: waits for the respawn (one retry)
        except MlsupError as exc:
            # A supervisor bug must not hide the other rows: record it, say so, stop killing.
            kills.failure = f"failed at kill {trial + 1}: {type(exc).__name__}: {exc}"
            break
        served = time.monotonic()
        row = sup.row(model_id)
        t = row["timeline"]
        kills.used.append(Usage.of(row["pid"]))
        kills.totals.append(served - killed)
        kills.detections.append(t["exited"] - killed)
        kills.respawns.append(t["ready"] - t["spawned"])
        kills.phases.append(
            {"detect": t["exited"] - killed, "backoff + lease": t["spawned"] - t["exited"],
             "spawn + load": t["ready"] - t["spawned"], "first call": served - t["ready"]}
        )  # fmt: skip
    return kills


def _crash_rows(sup: Any, trials: int) -> list[Row]:
    model = sup.model("crashy")
    kills = _kill(sup, "crashy", lambda: model.run({}), trials)
    if not kills.totals:
        return [not_run(SUITE, "SIGKILL -> serving again", "ms", str(kills.failure))]
    total = statistics.median(kills.totals) * 1e3
    respawn = statistics.median(kills.respawns) * 1e3
    met = total <= respawn + 50
    note = None if met else kills.note()
    if kills.failure is not None:
        note = f"{note or ''} {len(kills.totals)} of {trials} kills measured; {kills.failure}"
    return [
        Row(SUITE, "SIGKILL -> serving again", "ms", total, "respawn's spawn + load", respawn,
            "<= spawn + load + 50 ms", met, note, tuple(kills.totals), tuple(kills.respawns)),
        Row(SUITE, "SIGKILL -> exit detected", "ms", statistics.median(kills.detections) * 1e3,
            samples=tuple(kills.detections)),
    ]  # fmt: skip


def _minilm_rows(trials: int) -> list[Row]:
    """Real MiniLM: SIGKILL -> served again, against a load + first call in a warm process."""
    name = "minilm: SIGKILL -> serving again"
    workload = by_kind("minilm")
    workload.load()[0].unload()  # import the runtime here once: the baseline is warm
    before, started = Usage.here(), time.monotonic()
    loader, model = workload.load()
    workload.call(model)
    warm = (time.monotonic() - started) * 1e3
    warm_use = Usage.here() - before
    loader.unload()
    with (
        supervisor(workload.manifest(), memory_mb=16000, **_SINGLE_CRASHES) as running,
        running.client(timeout=300) as sup,
    ):
        proxy = sup.model(workload.kind)
        kills = _kill(sup, workload.kind, lambda: workload.call(proxy), trials)
    if not kills.totals:
        return [not_run(SUITE, name, "ms", str(kills.failure))]
    total = statistics.median(kills.totals) * 1e3
    met = total <= warm + 100
    return [
        Row(SUITE, name, "ms", total, "load + first call in a warm process", warm,
            "<= warm load + 100 ms", met,
            None if met else f"{kills.note()}. {usage_note(median_usage(kills.used), warm_use)}",
            tuple(kills.totals)),
    ]  # fmt: skip


def _preemption_rows(sup: Any, trials: int) -> list[Row]:
    granted, ready, victim = [], [], []
    for _ in range(trials):
        sup.load("low")
        asked = time.monotonic()
        sup.load("high")
        t = sup.row("high")["timeline"]
        victim.append(sup.row("low")["timeline"]["unloaded"] - asked)
        granted.append(t["lease_granted"] - asked)
        ready.append(t["ready"] - asked)
        sup.unload("high")
    drained, after = statistics.median(victim), statistics.median(granted)
    met = after <= drained + 0.05
    note = None
    if not met:
        note = (
            f"the victim was drained {drained * 1e3:.0f} ms after the request and the lease "
            f"granted {(after - drained) * 1e3:.1f} ms after that (a lost push falls back to "
            f"the next lease renewal, every {LEASE_RENEW_INTERVAL_S:.2f} s)"
        )
    return [
        Row(SUITE, "preemption: high-priority request -> victim drained", "ms",
            statistics.median(victim) * 1e3, samples=tuple(victim)),
        Row(SUITE, "preemption: high-priority request -> lease granted", "ms", after * 1e3,
            "victim drained", drained * 1e3, "<= drained + 50 ms", met, note,
            tuple(granted), tuple(victim)),
        Row(SUITE, "preemption: high-priority request -> ready", "ms",
            statistics.median(ready) * 1e3, samples=tuple(ready)),
    ]  # fmt: skip


def _idle_rows(sup: Any, trials: int) -> list[Row]:
    model = sup.model("idle")
    late, reload, cold = [], [], []
    started = time.monotonic()
    model.run({})
    cold.append(time.monotonic() - started)
    for _ in range(trials):
        model.run({})
        last = time.monotonic()
        row = _until(lambda: (r := sup.row("idle"))["state"] == "unloaded" and r)
        late.append(row["timeline"]["unloaded"] - last - IDLE_S)
        started = time.monotonic()
        model.run({})
        reload.append(time.monotonic() - started)
    return [
        Row(SUITE, f"idle unload: delay past the {IDLE_S:g} s timeout", "ms",
            statistics.median(late) * 1e3, samples=tuple(late)),
        Row(SUITE, "idle unload -> reload to first result", "ms",
            statistics.median(reload) * 1e3, "first load of the same model",
            cold[0] * 1e3, samples=tuple(reload)),
    ]  # fmt: skip


def run(quick: bool = False) -> list[Row]:
    """Crash, preemption and idle rows; ``quick`` runs two trials of each."""
    trials = 2 if quick else 10
    with (
        supervisor(_MODELS, memory_mb=1000, **_SINGLE_CRASHES) as running,
        running.client(timeout=60) as sup,
    ):
        rows = _crash_rows(sup, trials)
        rows += _preemption_rows(sup, trials)
        rows += _idle_rows(sup, max(2, trials // 3))
    return rows + _minilm_rows(trials)
