"""The command line as a user runs it: help, the demo, and the benchmark's JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .ipc_helpers import our_segments

MLSUP = [sys.executable, "-m", "mlsup"]


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MLSUP, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_help_lists_the_commands() -> None:
    out = run("--help")
    assert out.returncode == 0
    assert "bench" in out.stdout and "demo" in out.stdout


def test_no_command_prints_help_and_fails() -> None:
    out = run()
    assert out.returncode == 2 and "usage: mlsup" in out.stdout


def test_ipc_demo_runs_and_leaves_nothing_behind() -> None:
    before = our_segments()
    out = run("demo", "ipc")
    assert out.returncode == 0, out.stderr
    assert "result matches an in-process computation: True" in out.stdout
    assert "RequestTimeout" in out.stdout
    assert our_segments() <= before


def test_supervisor_demo_serves_real_models_and_survives_a_kill() -> None:
    out = run("demo", timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "(3, 384) float32" in out.stdout  # MiniLM embeddings through the supervisor
    assert "Paris" in out.stdout  # SmolLM2 answered, greedily
    assert "the caller gets WorkerCrashed" in out.stdout or "finished before the kill" in out.stdout
    assert "the next call is served by the respawned worker" in out.stdout
    assert "workers left running: none" in out.stdout


def test_unknown_suite_is_refused_with_the_choices() -> None:
    out = run("bench", "nope")
    assert out.returncode == 2 and "choose from" in out.stderr and "ipc" in out.stderr


def test_bench_ipc_quick_writes_well_formed_rows(tmp_path: Path) -> None:
    path = tmp_path / "ipc.json"
    out = run("bench", "ipc", "--quick", "--json", str(path), timeout=300)
    assert out.returncode == 0, out.stderr
    payload = json.loads(path.read_text())
    assert payload["machine"]["cores"] >= 1 and "python" in payload["machine"]
    rows = payload["rows"]
    names = {row["name"] for row in rows}
    assert {"round trip hot p50", "round trip after 10 ms idle p99"} <= names
    assert {"transfer 16 MiB vs memcpy", "transfer 16 MiB vs pickle"} <= names
    for row in rows:
        assert set(row) >= {"suite", "name", "unit", "value", "baseline", "baseline_value", "ratio"}
        assert row["suite"] == "ipc" and row["value"] > 0
        if row["baseline_value"]:
            assert abs(row["ratio"] - row["value"] / row["baseline_value"]) < 1e-9
    assert "round trip hot p50" in out.stdout  # the table for people
