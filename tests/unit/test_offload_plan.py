"""The validated llama loader's plan: which offload levels to try, best first."""

from __future__ import annotations

from mlsup.kit.loaders.validated_llama import LoadAttempt, LoadReport, plan_offload


def per_layer(mb_per_layer: float, fixed: float = 100) -> object:
    return lambda layers: fixed + mb_per_layer * layers


def test_no_gpu_means_cpu_only() -> None:
    assert plan_offload(30, None, per_layer(100), margin_mb=0) == [0]


def test_everything_fits_starts_with_full_offload() -> None:
    plan = plan_offload(30, 10_000, per_layer(100), margin_mb=256)
    assert plan == [30, 15, 7, 3, 1, 0]


def test_partial_fit_starts_with_the_most_layers_that_fit() -> None:
    # 100 + 100 * n <= 2000 - 256  ->  n <= 16.44
    assert plan_offload(30, 2000, per_layer(100), margin_mb=256)[:2] == [16, 8]
    assert plan_offload(30, 2000, per_layer(100), margin_mb=256)[-1] == 0


def test_nothing_fits_goes_straight_to_cpu() -> None:
    assert plan_offload(30, 300, per_layer(100), margin_mb=256) == [0]


def test_report_describes_the_choice() -> None:
    report = LoadReport(free_mb=8000, n_layer=30, n_gpu_layers=15, estimate_mb=900)
    report.attempts += [LoadAttempt(30, 1800, "ModelOOM"), LoadAttempt(15, 900)]
    assert report.device == "cuda+cpu"
    data = report.to_dict()
    assert data["attempts"][0] == {"n_gpu_layers": 30, "estimate_mb": 1800, "error": "ModelOOM"}
    assert LoadReport(free_mb=None, n_layer=30).device == "cpu"
    assert LoadReport(free_mb=9000, n_layer=30, n_gpu_layers=30).device == "cuda"
