"""``mlsup bench --quick`` over every suite, as CI runs it: well-formed rows, JSON and report.

No timing assertions: the machines are noisy; the ratios are judged in the report.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlsup.bench import SUITES
from mlsup.bench.report import target_limit
from mlsup.kit.loaders.registry import LOADERS_ENV

#: Every suite but chaos, which has a quick test of its own (test_bench_chaos.py).
SUITES_HERE = [suite for suite in SUITES if suite != "chaos"]
KEYS = {"suite", "name", "unit", "value", "baseline", "baseline_value", "ratio", "target", "met"}


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_quick_bench_of_every_suite_writes_rows_and_report(tmp_path: Path) -> None:
    rows_path, report = tmp_path / "rows.json", tmp_path / "report"
    # As a user runs it: without the test suite's registration of the probe loader.
    env = {key: value for key, value in os.environ.items() if key != LOADERS_ENV}
    out = subprocess.run(
        [sys.executable, "-m", "mlsup", "bench", *SUITES_HERE, "--quick", "--json", str(rows_path),
         "--report", str(report)],
        check=False, capture_output=True, text=True, timeout=450, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-4000:]

    payload = json.loads(rows_path.read_text())
    assert payload["machine"]["cores"] >= 1 and "versions" in payload["machine"]
    rows = payload["rows"]
    assert {row["suite"] for row in rows} == set(SUITES_HERE)
    for row in rows:
        assert set(row) >= KEYS, row
        if row["value"] is None:  # GPU-only rows without a GPU, or a failure: the note says
            assert row["note"].startswith("not run"), row
            continue
        assert math.isfinite(row["value"]), row
        if row["baseline_value"]:
            assert row["ratio"] == pytest.approx(row["value"] / row["baseline_value"]), row
        if row["target"] is not None:
            assert isinstance(row["met"], bool), row
    names = {(row["suite"], row["name"]) for row in rows}
    assert ("proxy", "no-op round trip p50 (probe run({}))") in names
    assert any(s == "load" and n.endswith("lease phase") for s, n in names)
    assert any(s == "infer" and n.endswith("x16 p99") for s, n in names)
    assert any(s == "recovery" and n.startswith("SIGKILL") for s, n in names)
    # Phases of a cold start come from the supervisor's timeline: never negative.
    assert all(row["value"] >= 0 for row in rows if row["name"].endswith(" phase"))

    text = (report / "REPORT.md").read_text()
    for suite in SUITES_HERE:
        assert f"## {suite}" in text
    table = (report / "TABLE.md").read_text().splitlines()
    judged = [row for row in rows if row["target"] is not None or row["value"] is None]
    assert table[0].startswith("| suite | measurement |") and len(table) == 2 + len(judged)
    images = [line.split("(")[-1].rstrip(")") for line in text.splitlines() if "![" in line]
    assert "ratios.png" in images
    for image in images:
        assert (report / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", image


def test_ratio_targets_parse() -> None:
    assert target_limit("<= 1.3x") == ("<=", 1.3)
    assert target_limit(">= 0.8x") == (">=", 0.8)
    assert target_limit("<= 15 ms") is None
    assert target_limit(None) is None
