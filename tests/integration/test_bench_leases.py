from __future__ import annotations

import math

from mlsup.bench import SUITES
from mlsup.bench.leases import run


def test_quick_lease_bench_rows_are_well_formed() -> None:
    assert SUITES["leases"] == "mlsup.bench.leases"
    rows = run(quick=True)
    names = [row.name for row in rows]
    assert len(names) == len(set(names)) == 8
    assert "preemption: request -> granted (median)" in names
    for row in rows:
        assert row.suite == "leases" and row.unit in ("ms", "leases/s")
        assert row.value is not None and math.isfinite(row.value) and row.value > 0
        assert (row.target is None) == (row.met is None)
        assert (row.baseline is None) == (row.baseline_value is None)
        assert row.to_json()["ratio"] == row.ratio
