"""The queue runner's sidecar spec (decided from the configuration alone), the counts reply
of the stats script, and the `mlsup jobs` table."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from rich.console import Console

from mlsup import defaults
from mlsup.errors import ConfigError
from mlsup.kit.manifest import Manifest, ModelSpec
from mlsup.queues.cli import render_table
from mlsup.queues.stats import QueueCounts
from mlsup.supervisor.config import RuntimePaths, SupervisorConfig
from mlsup.supervisor.sidecars import sidecar_specs

QUEUE = {"queues": {"q": {"model": "m", "op": "embed"}}}


def config() -> SupervisorConfig:
    model = ModelSpec(id="m", loader="onnx", path="/models/m.onnx")
    manifest = Manifest(source="/etc/mlsup.toml", models_dir=Path("/models"), models={"m": model})
    return SupervisorConfig(manifest, RuntimePaths(Path("/run/rt")), None, [])


def test_queues_run_the_queue_runner_with_room_for_running_jobs() -> None:
    assert sidecar_specs(config(), {}) == []
    ok = {"queues": {"q": {"model": "m", "op": "run"}}}
    (spec,) = sidecar_specs(config(), ok)
    assert spec.name == "queues"
    assert spec.argv == (
        sys.executable, "-m", "mlsup.queues", "--runtime", "/run/rt", "--config",
        "/etc/mlsup.toml",
    )  # fmt: skip
    assert spec.stop_grace_s > defaults.QUEUE_STOP_GRACE_S


def test_a_bad_queue_fails_before_anything_runs() -> None:
    with pytest.raises(ConfigError, match=r"\[queues\.q\] op: 'embed' is not an operation"):
        sidecar_specs(config(), QUEUE)


def test_counts_from_the_script_reply() -> None:
    counts = QueueCounts.from_reply("q", [3, 1, 10, 2, 0, 1500])
    assert counts.by_state() == {
        "waiting": 3, "active": 1, "completed": 10, "failed": 2, "delayed": 0
    }  # fmt: skip
    assert counts.oldest_waiting_s == 1.5
    assert QueueCounts.from_reply("q", [0, 0, 0, 0, 0, -1]).oldest_waiting_s is None


def test_the_jobs_table_shows_every_state_and_the_age() -> None:
    rows = [
        QueueCounts("summaries", 3, 1, 10, 2, 0, 90.0),
        QueueCounts("vectors", 0, 0, 5, 0, 1, None),
    ]
    console = Console(width=140, record=True)
    console.print(render_table(rows, {"summaries": "smollm2"}))
    text = console.export_text()
    for word in ("waiting", "active", "completed", "failed", "delayed", "oldest waiting"):
        assert word in text
    assert "summaries" in text and "smollm2" in text and "1.5 min" in text
    vectors_line = next(line for line in text.splitlines() if "vectors" in line)
    assert [cell.strip() for cell in vectors_line.split("│")[1:-1]] == [
        "vectors", "-", "0", "0", "5", "0", "1", "-"
    ]  # fmt: skip
