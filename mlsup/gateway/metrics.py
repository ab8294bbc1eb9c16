"""Prometheus metrics of the gateway and of the supervisor behind it (vLLM/Triton-style names).

Counters and histograms of HTTP requests are kept as requests happen. Everything the
supervisor knows (model states, restarts, leases, requests made through the Python proxy) is
read at scrape time from status rows and the lease list, by :func:`supervisor_families`, a pure
function of those snapshots.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from mlsup.gateway.admission import ModelQueue
from mlsup.gateway.operations import ModelRow, public_state

__all__ = ["GatewayMetrics", "RequestTally", "RestartTally", "Snapshot", "supervisor_families"]

MB = 1 << 20
#: Every state a model can be in, so that each model has one 1 and the rest 0.
STATES = ("unloaded", "loading", "ready", "unloading", "failed")
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


@dataclass
class RequestTally:
    """Requests served by each model's workers, made monotonic across respawns (a new worker
    counts from zero), minus those the gateway itself sent: the requests made through the
    Python proxy (and any other direct client)."""

    _seen: dict[tuple[str, int], int] = field(default_factory=dict)
    _total: dict[str, int] = field(default_factory=dict)
    _ours: dict[str, int] = field(default_factory=dict)
    _reported: dict[str, int] = field(default_factory=dict)

    def gateway_sent(self, model: str, count: int = 1) -> None:
        """The gateway sent ``count`` requests to ``model``'s worker."""
        self._ours[model] = self._ours.get(model, 0) + count

    def observe(self, row: ModelRow) -> None:
        """A status row: its worker (generation) has served ``requests`` so far."""
        key = (row.model, row.generation)
        before = self._seen.get(key, 0)
        if row.requests > before:
            self._total[row.model] = self._total.get(row.model, 0) + row.requests - before
            self._seen[key] = row.requests

    def others(self, model: str) -> int:
        """Requests to ``model`` not made by the gateway; never decreases."""
        value = max(0, self._total.get(model, 0) - self._ours.get(model, 0))
        value = max(value, self._reported.get(model, 0))
        self._reported[model] = value
        return value


@dataclass
class RestartTally:
    """Worker restarts of each model by reason. A status row carries the restart count and the
    reason its last worker stopped (``exit_reason``, set when the respawn is decided), so the
    restarts gained since the previous scrape are the ones of that reason."""

    _seen: dict[str, int] = field(default_factory=dict)
    _by_reason: dict[tuple[str, str], int] = field(default_factory=dict)

    def observe(self, row: ModelRow) -> None:
        """A status row; counts what its ``restarts`` gained under its ``exit_reason``."""
        before = self._seen.get(row.model, 0)
        # A lower count: another supervisor (a restart of mlsup) counts from zero again.
        gained = row.restarts - before if row.restarts >= before else row.restarts
        self._seen[row.model] = row.restarts
        if gained > 0:
            key = (row.model, row.exit_reason or "unknown")
            self._by_reason[key] = self._by_reason.get(key, 0) + gained

    def counts(self, model: str) -> dict[str, int]:
        """Restarts of ``model`` by reason, ``crash`` always present (0 when none)."""
        found = {reason: n for (name, reason), n in self._by_reason.items() if name == model}
        return {"crash": 0, **found}


@dataclass(frozen=True)
class Snapshot:
    """What the supervisor said at scrape time."""

    rows: Sequence[ModelRow]
    leases: Sequence[Mapping[str, Any]]
    gpu_used: Mapping[int, int] = field(default_factory=dict)  #: NVML bytes, where GPUs exist
    #: The ``gpus`` control operation: every GPU with its ``capacity_mb``, idle ones too.
    gpus: Sequence[Mapping[str, Any]] = ()


def supervisor_families(
    snapshot: Snapshot,
    tally: RequestTally,
    queues: Mapping[str, ModelQueue],
    http_counts: Mapping[tuple[str, str, str], int],
    restart_tally: RestartTally | None = None,
) -> list[Metric]:
    """The metric families derived from the supervisor's state, and ``mlsup_requests_total``:
    the gateway's ``http_counts`` by (model, op, status) plus, as ``op="proxy"``, what the
    workers served for other clients."""
    state = GaugeMetricFamily(
        "mlsup_model_state", "1 for the state each model is in", labels=["model", "state"]
    )
    load = GaugeMetricFamily(
        "mlsup_model_load_duration_seconds",
        "Time from lease request to ready of each model's current worker",
        labels=["model"],
    )
    restarts = CounterMetricFamily(
        "mlsup_worker_restarts",
        "Workers respawned by the supervisor after they ended unexpectedly",
        labels=["model", "reason"],
    )
    requests = CounterMetricFamily(
        "mlsup_requests",
        "Requests, by model, operation and HTTP status; op=proxy: made through the Python "
        "proxy (counted by the workers)",
        labels=["model", "op", "status"],
    )
    for (model, op, status), count in sorted(http_counts.items()):
        requests.add_metric([model, op, status], float(count))
    running = GaugeMetricFamily(
        "mlsup_requests_running", "Gateway requests being served", labels=["model"]
    )
    waiting = GaugeMetricFamily(
        "mlsup_requests_waiting", "Gateway requests waiting for their model", labels=["model"]
    )
    restart_tally = restart_tally if restart_tally is not None else RestartTally()
    for row in snapshot.rows:
        tally.observe(row)
        restart_tally.observe(row)
        current = public_state(row.state)
        for name in STATES:
            state.add_metric([row.model, name], 1.0 if name == current else 0.0)
        started, ready = row.timeline.get("lease_requested"), row.timeline.get("ready")
        if started is not None and ready is not None and ready >= started:
            load.add_metric([row.model], ready - started)
        for reason, count in sorted(restart_tally.counts(row.model).items()):
            restarts.add_metric([row.model, reason], float(count))
        # Requests the gateway did not send: the Python proxy's (and other direct clients').
        requests.add_metric([row.model, "proxy", "served"], float(tally.others(row.model)))
        queue = queues.get(row.model)
        running.add_metric([row.model], float(queue.running if queue else 0))
        waiting.add_metric([row.model], float(queue.waiting if queue else 0))
    return [requests, state, load, restarts, running, waiting, *_lease_families(snapshot)]


def _lease_families(snapshot: Snapshot) -> Iterator[Metric]:
    vram = GaugeMetricFamily(
        "mlsup_lease_vram_bytes", "VRAM leased, by holder and GPU", labels=["model", "gpu"]
    )
    total = GaugeMetricFamily(
        "mlsup_gpu_memory_total_bytes", "Leasable memory of each GPU", labels=["gpu"]
    )
    leased = GaugeMetricFamily(
        "mlsup_gpu_memory_leased_bytes", "Memory of each GPU under lease", labels=["gpu"]
    )
    capacity: dict[int, int] = {}
    used: dict[int, int] = {}
    by_holder: dict[tuple[str, int], int] = {}
    for lease in snapshot.leases:
        gpu = int(lease["gpu"])
        capacity[gpu] = int(lease["capacity_mb"]) * MB
        used[gpu] = used.get(gpu, 0) + int(lease["vram_mb"]) * MB
        key = (str(lease.get("model_id") or "-"), gpu)
        by_holder[key] = by_holder.get(key, 0) + int(lease["vram_mb"]) * MB
    for (model, gpu), size in sorted(by_holder.items()):
        vram.add_metric([model, str(gpu)], float(size))
    for gpu_row in snapshot.gpus:  # every GPU, not only those holding a lease
        capacity[int(gpu_row["gpu"])] = int(gpu_row["capacity_mb"]) * MB
    for gpu in sorted(capacity):
        total.add_metric([str(gpu)], float(capacity[gpu]))
        leased.add_metric([str(gpu)], float(used.get(gpu, 0)))
    yield from (vram, total, leased)
    if snapshot.gpu_used:
        nvml = GaugeMetricFamily(
            "mlsup_gpu_memory_used_bytes", "Memory in use on each GPU (NVML)", labels=["gpu"]
        )
        for gpu, size in sorted(snapshot.gpu_used.items()):
            nvml.add_metric([str(gpu)], float(size))
        yield nvml


class _Live:
    """A collector that yields the families of the latest snapshot."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        m = self._metrics
        snapshot = m.snapshot if m.snapshot is not None else Snapshot(rows=(), leases=())
        return supervisor_families(snapshot, m.tally, m.queues, m.http_counts, m.restarts)


class GatewayMetrics:
    """The gateway's registry: HTTP request counters and histograms, and the supervisor's
    state as of the last :meth:`render`."""

    def __init__(self, queues: Mapping[str, ModelQueue]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.queues = queues
        self.tally = RequestTally()
        self.restarts = RestartTally()
        self.snapshot: Snapshot | None = None
        self._lease_waits_seen: set[tuple[str, float]] = set()
        #: Gateway requests by (model, op, HTTP status); exported as mlsup_requests_total.
        self.http_counts: dict[tuple[str, str, str], int] = {}
        self.duration = Histogram(
            "mlsup_request_duration_seconds",
            "Time from request to complete response",
            ["model", "op"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "mlsup_time_to_first_token_seconds",
            "Time from request to the first generated piece",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.lease_wait = Histogram(
            "mlsup_lease_wait_seconds",
            "Time models waited for their VRAM lease",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_Live(self))

    def count(self, model: str, op: str, status: int) -> None:
        """One gateway request answered with ``status``."""
        key = (model, op, str(status))
        self.http_counts[key] = self.http_counts.get(key, 0) + 1

    def render(self, snapshot: Snapshot) -> bytes:
        """The text exposition for this scrape."""
        for row in snapshot.rows:
            asked = row.timeline.get("lease_requested")
            granted = row.timeline.get("lease_granted")
            if asked is not None and granted is not None and granted >= asked:
                key = (row.model, granted)
                if key not in self._lease_waits_seen:
                    self._lease_waits_seen.add(key)
                    self.lease_wait.observe(granted - asked)
        self.snapshot = snapshot
        return generate_latest(self.registry)
