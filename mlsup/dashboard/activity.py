"""Activity of each model over the last minutes: requests per second and latency percentiles.

What is measured, honestly:

- **requests/s** comes from the status rows' ``requests`` counter, which each worker reports
  in its heartbeats. The counter restarts at zero with every new worker (generation); the
  :class:`RequestCounter` turns it into one monotonic total per model. It counts every request
  a worker served, whoever sent it (gateway, Python proxy, queues), at the heartbeat's
  granularity.
- **latency** is not visible to the supervisor. It is shown only when the process serving the
  dashboard passes a :data:`LatencySource` (the gateway wires its Prometheus histograms): the
  cumulative bucket counts are sampled like the request counter, and p50/p99 are read from the
  counts gained inside the window, the way Prometheus' ``histogram_quantile`` does.

Everything here is pure (time is an argument) and unit-tested without a server.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ActivityRing",
    "Histogram",
    "LatencySource",
    "ModelActivity",
    "RequestCounter",
    "histogram_quantile",
    "histograms_from_metrics",
    "rate",
    "rate_series",
]


@dataclass(frozen=True)
class Histogram:
    """Cumulative latency histogram of one model, as Prometheus keeps it.

    ``bounds`` are the finite upper bounds in seconds, ascending; ``counts[i]`` is the number of
    observations ``<= bounds[i]``, and ``counts[-1]`` (one more than ``bounds``) counts all of
    them (the ``+Inf`` bucket).
    """

    bounds: tuple[float, ...]
    counts: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.counts) != len(self.bounds) + 1:
            raise ValueError("a histogram has one count per bound plus the +Inf bucket")
        if list(self.bounds) != sorted(self.bounds):
            raise ValueError("histogram bounds must ascend")


#: Called on every poll; the latency histogram of each model it knows (others: not measured).
LatencySource = Callable[[], Mapping[str, Histogram]]


def histograms_from_metrics(families: Iterable[Any], label: str = "model") -> dict[str, Histogram]:
    """One :class:`Histogram` per value of ``label``, from prometheus-client metric families
    (``histogram.collect()``): the ``_bucket`` samples, summed over every other label (such as
    the operation). Wires a gateway's histograms into :data:`LatencySource`::

        latency=lambda: histograms_from_metrics(metrics.duration.collect())
    """
    buckets: dict[str, dict[float, float]] = {}
    for family in families:
        for sample in family.samples:
            if not sample.name.endswith("_bucket") or label not in sample.labels:
                continue
            by_bound = buckets.setdefault(str(sample.labels[label]), {})
            bound = float(sample.labels["le"])  # "+Inf" parses as inf
            by_bound[bound] = by_bound.get(bound, 0.0) + float(sample.value)
    result = {}
    for key, by_bound in buckets.items():
        bounds = sorted(b for b in by_bound if not math.isinf(b))
        total = by_bound.get(math.inf, max(by_bound.values(), default=0.0))
        counts = [int(by_bound[b]) for b in bounds] + [int(total)]
        result[key] = Histogram(tuple(bounds), tuple(counts))
    return result


@dataclass(frozen=True)
class ModelActivity:
    """What the page shows in a model's activity columns."""

    rps: float | None  #: requests/s over the window; None until two samples exist
    series: tuple[float, ...]  #: requests/s per sparkline step, oldest first
    p50_ms: float | None  #: None: latency not measured, or no requests in the window
    p99_ms: float | None
    latency_measured: bool  #: whether a latency source covers this model at all


@dataclass
class RequestCounter:
    """One model's request total across worker generations (each new worker counts from 0)."""

    total: int = 0
    _generation: int | None = None
    _last: int = 0

    def observe(self, generation: int, requests: int) -> int:
        """A row's counter for its worker generation; the monotonic total so far."""
        if generation != self._generation or requests < self._last:
            gained = requests  # a new worker: everything it counted is new
        else:
            gained = requests - self._last
        self._generation, self._last = generation, requests
        self.total += max(gained, 0)
        return self.total


Sample = tuple[float, float]  #: (time in seconds, a cumulative count)


def _value_at(samples: Sequence[Sample], t: float) -> float | None:
    """The count of the last sample at or before t (None if every sample is later)."""
    index = bisect.bisect_right([s[0] for s in samples], t) - 1
    return samples[index][1] if index >= 0 else None


def rate(samples: Sequence[Sample], now: float, window_s: float) -> float | None:
    """Count gained per second over the last ``window_s`` (or since the first sample, if later);
    None with fewer than two samples or no elapsed time."""
    if len(samples) < 2:
        return None
    start = max(now - window_s, samples[0][0])
    before = _value_at(samples, start)
    end_t, end_value = samples[-1]
    if before is None or end_t <= start:
        return None
    return max(end_value - before, 0.0) / (end_t - start)


def rate_series(
    samples: Sequence[Sample], now: float, window_s: float, step_s: float
) -> tuple[float, ...]:
    """Requests/s in each ``step_s`` slice of the window, oldest first; 0 before the first
    sample. A slice the first sample falls in counts from that sample (what was gained
    before it is unknown, not assumed)."""
    steps = max(1, math.ceil(window_s / step_s))
    series = []
    for i in range(steps):
        lo, hi = now - (steps - i) * step_s, now - (steps - i - 1) * step_s
        a, b = _value_at(samples, lo), _value_at(samples, hi)
        if a is None and samples and samples[0][0] <= hi:
            a = samples[0][1]
        series.append(0.0 if a is None or b is None else max(b - a, 0.0) / step_s)
    return tuple(series)


def histogram_quantile(q: float, bounds: Sequence[float], counts: Sequence[float]) -> float | None:
    """The q-quantile (0..1) of cumulative bucket counts, interpolated linearly inside the
    bucket that holds it (Prometheus' method). None without observations. Observations above
    the last bound are reported as that bound: the histogram cannot say more."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within 0..1, not {q}")
    total = counts[-1] if counts else 0
    if total <= 0 or not bounds:
        return None
    rank = q * total
    index = next((i for i, c in enumerate(counts) if c >= rank), len(counts) - 1)
    if index >= len(bounds):
        return bounds[-1]
    lower = bounds[index - 1] if index > 0 else 0.0
    below = counts[index - 1] if index > 0 else 0.0
    inside = counts[index] - below
    if inside <= 0:
        return bounds[index]
    return lower + (bounds[index] - lower) * (rank - below) / inside


@dataclass
class _ModelRing:
    counter: RequestCounter = field(default_factory=RequestCounter)
    requests: deque[Sample] = field(default_factory=deque)
    latency: deque[tuple[float, Histogram]] = field(default_factory=deque)
    #: The last poll at which the latency source answered without this model: it had served
    #: none of its requests yet (a Prometheus histogram child appears at its first observation).
    unmeasured_at: float | None = None


@dataclass
class ActivityRing:
    """Samples of every model's counters over the last ``window_s`` (plus one older sample, the
    baseline of the window), fed on every poll."""

    window_s: float
    step_s: float
    _models: dict[str, _ModelRing] = field(default_factory=dict)

    def observe(
        self,
        now: float,
        model: str,
        generation: int,
        requests: int,
        latency: Histogram | None,
        *,
        source_answered: bool = False,
    ) -> None:
        """Record one poll's counters of ``model`` at ``now``. ``source_answered``: a latency
        source answered this poll (``latency`` None then means: no request measured yet)."""
        ring = self._models.setdefault(model, _ModelRing())
        ring.requests.append((now, float(ring.counter.observe(generation, requests))))
        if latency is None and source_answered and not ring.latency:
            ring.unmeasured_at = now
        if latency is not None:
            if not ring.latency and ring.unmeasured_at is not None:
                # Its first requests came after a poll that saw none: they are in the window.
                zero = Histogram(latency.bounds, (0,) * len(latency.counts))
                ring.latency.append((ring.unmeasured_at, zero))
            ring.latency.append((now, latency))
        for samples in (ring.requests, ring.latency):
            # Keep the newest sample at or before the window's start: it is the baseline.
            while len(samples) > 1 and samples[1][0] <= now - self.window_s:
                samples.popleft()

    def forget(self, keep: set[str]) -> None:
        """Drop models no longer configured."""
        for model in set(self._models) - keep:
            del self._models[model]

    def activity(self, model: str, now: float) -> ModelActivity:
        """The activity columns of ``model`` at ``now``."""
        ring = self._models.get(model, _ModelRing())
        samples = list(ring.requests)
        p50 = p99 = None
        if ring.latency:
            p50, p99 = self._percentiles(list(ring.latency), now)
        return ModelActivity(
            rps=rate(samples, now, self.window_s),
            series=rate_series(samples, now, self.window_s, self.step_s),
            p50_ms=p50,
            p99_ms=p99,
            latency_measured=bool(ring.latency),
        )

    def _percentiles(
        self, samples: list[tuple[float, Histogram]], now: float
    ) -> tuple[float | None, float | None]:
        newest = samples[-1][1]
        start = now - self.window_s
        # Counts gained since the window's start, or since the first sample when the dashboard
        # has watched for less than the window: never what came before it started watching.
        baseline = next((h for t, h in reversed(samples) if t <= start), samples[0][1])
        if baseline.bounds != newest.bounds:
            return None, None  # the source changed its buckets: no honest difference
        counts = [max(a - b, 0) for a, b in zip(newest.counts, baseline.counts, strict=True)]
        p50 = histogram_quantile(0.5, newest.bounds, counts)
        p99 = histogram_quantile(0.99, newest.bounds, counts)
        return (
            None if p50 is None else p50 * 1000,
            None if p99 is None else p99 * 1000,
        )
