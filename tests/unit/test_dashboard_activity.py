"""The dashboard's activity windows: request counters across respawns, rates, sparkline slices,
and latency percentiles from cumulative histograms (pure, with explicit times)."""

from __future__ import annotations

import pytest

from mlsup.dashboard.activity import (
    ActivityRing,
    Histogram,
    RequestCounter,
    histogram_quantile,
    histograms_from_metrics,
    rate,
    rate_series,
)


def test_counter_is_monotonic_across_worker_generations() -> None:
    counter = RequestCounter()
    assert counter.observe(1, 0) == 0
    assert counter.observe(1, 5) == 5
    assert counter.observe(1, 8) == 8
    # A respawned worker counts from zero again: its 2 requests are new ones.
    assert counter.observe(2, 2) == 10
    assert counter.observe(2, 2) == 10
    # The same generation going backwards cannot happen, but must not subtract.
    assert counter.observe(2, 1) == 11


def test_rate_over_the_window_uses_the_baseline_before_it() -> None:
    samples = [(0.0, 0.0), (10.0, 10.0), (20.0, 30.0), (30.0, 60.0)]
    assert rate(samples, now=30.0, window_s=10.0) == pytest.approx(3.0)
    assert rate(samples, now=30.0, window_s=20.0) == pytest.approx(2.5)
    # A window longer than what was watched: since the first sample.
    assert rate(samples, now=30.0, window_s=300.0) == pytest.approx(2.0)


def test_rate_needs_two_samples() -> None:
    assert rate([], now=5.0, window_s=60.0) is None
    assert rate([(1.0, 4.0)], now=5.0, window_s=60.0) is None


def test_rate_series_has_one_point_per_step_oldest_first() -> None:
    samples = [(0.0, 0.0), (10.0, 0.0), (20.0, 50.0), (30.0, 50.0)]
    series = rate_series(samples, now=30.0, window_s=30.0, step_s=10.0)
    assert series == (0.0, 5.0, 0.0)
    # Slices before the first sample are unknown, shown as 0.
    assert rate_series(samples, now=30.0, window_s=50.0, step_s=10.0)[:2] == (0.0, 0.0)


def test_rate_series_counts_a_slice_from_the_first_sample_inside_it() -> None:
    # Watched only since t=5: the slice (0, 10] counts what came after that.
    assert rate_series([(5.0, 0.0), (8.0, 30.0)], now=10.0, window_s=10.0, step_s=10.0) == (3.0,)


BOUNDS = (0.01, 0.1, 1.0)


def test_quantile_interpolates_inside_the_bucket() -> None:
    # 100 observations: 50 <= 10 ms, 40 in (10, 100] ms, 10 in (100 ms, 1 s].
    counts = (50, 90, 100, 100)
    assert histogram_quantile(0.5, BOUNDS, counts) == pytest.approx(0.01)
    assert histogram_quantile(0.7, BOUNDS, counts) == pytest.approx(0.01 + 0.09 * 0.5)
    assert histogram_quantile(0.99, BOUNDS, counts) == pytest.approx(0.1 + 0.9 * 0.9)


def test_quantile_without_observations_is_none() -> None:
    assert histogram_quantile(0.5, BOUNDS, (0, 0, 0, 0)) is None


def test_quantile_above_the_last_bound_is_that_bound() -> None:
    assert histogram_quantile(0.99, BOUNDS, (0, 0, 0, 10)) == 1.0


def test_quantile_outside_0_1_is_an_error() -> None:
    with pytest.raises(ValueError, match="quantile"):
        histogram_quantile(1.5, BOUNDS, (1, 1, 1, 1))


def test_histogram_shape_is_checked() -> None:
    with pytest.raises(ValueError, match="one count per bound"):
        Histogram((0.1, 1.0), (1, 2))
    with pytest.raises(ValueError, match="ascend"):
        Histogram((1.0, 0.1), (1, 2, 3))


def test_ring_rates_requests_across_a_respawn() -> None:
    ring = ActivityRing(window_s=60.0, step_s=10.0)
    ring.observe(0.0, "m", 1, 0, None)
    ring.observe(10.0, "m", 1, 20, None)
    ring.observe(20.0, "m", 2, 10, None)  # respawned: 10 more, not -10
    activity = ring.activity("m", 20.0)
    assert activity.rps == pytest.approx(30 / 20)
    assert activity.series[-2:] == (2.0, 1.0)
    assert activity.latency_measured is False
    assert activity.p50_ms is None


def test_ring_keeps_one_baseline_sample_before_the_window() -> None:
    ring = ActivityRing(window_s=10.0, step_s=5.0)
    for t in range(0, 101, 5):
        ring.observe(float(t), "m", 1, t, None)  # one request per second
    assert ring.activity("m", 100.0).rps == pytest.approx(1.0)
    kept = ring._models["m"].requests
    assert kept[0][0] <= 90.0 < kept[1][0]
    assert len(kept) == 3


def test_ring_latency_counts_only_what_the_window_gained() -> None:
    ring = ActivityRing(window_s=60.0, step_s=10.0)
    old = Histogram(BOUNDS, (1000, 1000, 1000, 1000))  # a slow past, all <= 10 ms
    ring.observe(0.0, "m", 1, 0, old)
    ring.observe(100.0, "m", 1, 0, old)
    # In the window: 10 requests, all between 100 ms and 1 s.
    ring.observe(130.0, "m", 1, 0, Histogram(BOUNDS, (1000, 1000, 1010, 1010)))
    activity = ring.activity("m", 130.0)
    assert activity.latency_measured is True
    assert activity.p50_ms is not None and activity.p99_ms is not None
    assert 100.0 < activity.p50_ms < activity.p99_ms <= 1000.0


def test_ring_latency_before_any_new_request_is_none() -> None:
    ring = ActivityRing(window_s=60.0, step_s=10.0)
    histogram = Histogram(BOUNDS, (5, 5, 5, 5))
    ring.observe(0.0, "m", 1, 0, histogram)
    # Watched once: the 5 requests came before the dashboard looked, not in its window.
    assert ring.activity("m", 0.0).p50_ms is None
    ring.observe(1.0, "m", 1, 0, histogram)
    assert ring.activity("m", 1.0).p50_ms is None


def test_ring_latency_of_a_model_first_measured_while_watched_counts_from_zero() -> None:
    ring = ActivityRing(window_s=60.0, step_s=10.0)
    # The source answers but has no histogram for m yet: m has served no measured request.
    ring.observe(0.0, "m", 1, 0, None, source_answered=True)
    assert ring.activity("m", 0.0).latency_measured is False
    ring.observe(1.0, "m", 1, 3, Histogram(BOUNDS, (0, 3, 3, 3)))  # 3 requests, 10..100 ms
    activity = ring.activity("m", 1.0)
    assert activity.latency_measured is True
    assert activity.p50_ms is not None and 10.0 < activity.p50_ms <= 100.0


def test_ring_without_an_answering_source_assumes_nothing_about_the_past() -> None:
    ring = ActivityRing(window_s=60.0, step_s=10.0)
    ring.observe(0.0, "m", 1, 0, None)  # no source answered: the past is unknown
    ring.observe(1.0, "m", 1, 3, Histogram(BOUNDS, (0, 3, 3, 3)))
    assert ring.activity("m", 1.0).p50_ms is None


def test_ring_forgets_models_no_longer_configured() -> None:
    ring = ActivityRing(window_s=60.0, step_s=10.0)
    ring.observe(0.0, "a", 1, 0, None)
    ring.observe(0.0, "b", 1, 0, None)
    ring.forget({"a"})
    assert set(ring._models) == {"a"}
    assert ring.activity("b", 1.0).rps is None


def test_histograms_from_prometheus_client_sum_over_operations() -> None:
    from prometheus_client import CollectorRegistry
    from prometheus_client import Histogram as PromHistogram

    duration = PromHistogram(
        "d_seconds", "d", ["model", "op"], buckets=BOUNDS, registry=CollectorRegistry()
    )
    for seconds in (0.005, 0.05, 0.5):
        duration.labels(model="chat", op="chat").observe(seconds)
    duration.labels(model="chat", op="complete").observe(5.0)
    duration.labels(model="embed", op="embed").observe(0.005)
    found = histograms_from_metrics(duration.collect())
    assert found["chat"] == Histogram(BOUNDS, (1, 2, 3, 4))
    assert found["embed"] == Histogram(BOUNDS, (1, 1, 1, 1))
    chat = found["chat"]
    assert histogram_quantile(0.5, chat.bounds, chat.counts) == pytest.approx(0.1)
