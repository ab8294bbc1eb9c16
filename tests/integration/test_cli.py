"""The command line as a user runs it: help, the supervisor's commands against a real
supervisor, the demo, and the benchmark's JSON."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

from mlsup.ipc.shm import sweep_orphans
from mlsup.kit.loaders.registry import ENTRY_POINT_GROUP, LOADERS_ENV
from mlsup.testing.loaders import PROBE_TARGET
from mlsup.testing.redis import TestRedis
from mlsup.testing.supervisor import RunningSupervisor, manifest

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


# --- the supervisor's commands, against a real supervisor ---------------------------------

PROBES = """
[models.probe]
loader = "probe"
path = "probe.txt"
vram_mb = 64
idle_timeout_s = 0

[models.slow]
loader = "probe"
path = "probe.txt"
vram_mb = 32
idle_timeout_s = 0
options = { load_s = 1.0 }
"""


@pytest.fixture
def probes(tmp_path: Path, redis_server: TestRedis, redis_prefix: str) -> Iterator[Any]:
    """A supervisor serving two probe models on a simulated GPU of 1000 MB."""
    supervisor = RunningSupervisor(tmp_path, manifest(redis_server.url, redis_prefix, PROBES))
    supervisor.start()
    try:
        yield supervisor
    finally:
        supervisor.stop()
        sweep_orphans()


def cli(supervisor: Any, *args: str) -> subprocess.CompletedProcess[str]:
    """``mlsup ARGS`` as a user runs it against supervisor, its output piped (not a terminal)."""
    env = {**os.environ, "MLSUP_RUNTIME_DIR": str(supervisor.runtime), "NO_COLOR": ""}
    return subprocess.run(
        [*MLSUP, *args], capture_output=True, text=True, timeout=120, check=False, env=env
    )


def test_load_shows_each_stage_then_ready(probes: Any) -> None:
    out = cli(probes, "load", "slow")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    loading = [line for line in lines if "slow: starting loading" in line]
    # The worker reports the stage with the size of the model's files (probe.txt: 6 bytes).
    assert loading and "with probe" in loading[0] and loading[0].endswith(" of 6 B)")
    assert lines[-1].startswith("slow is ready: pid ") and "32 MB on GPU 0" in lines[-1]
    assert "\x1b[" not in out.stdout  # not a terminal: no colour, no live display
    row = probes.row("slow")
    assert row["state"] == "ready" and f"pid {row['pid']}," in lines[-1]


def test_status_counts_the_requests_the_worker_served(probes: Any) -> None:
    with probes.client() as client:
        client.model("probe").embed(["a"])
        client.model("probe").run({"x": 1})
    # The worker reports its count right after each request; wait for the report to land.
    probes.wait_for("probe", lambda row: row["requests"] == 2)
    out = cli(probes, "status")
    assert out.returncode == 0, out.stderr
    table = {line.split()[0]: line.split() for line in out.stdout.splitlines()[1:]}
    assert out.stdout.split()[:2] == ["MODEL", "STATE"]
    assert table["probe"][1] == "ready" and table["probe"][8] == "2"
    assert table["slow"][1] == "unloaded"
    rows = json.loads(cli(probes, "status", "--json").stdout)
    assert {row["model"]: row["requests"] for row in rows}["probe"] == 2


def test_leases_lists_every_lease_and_how_full_each_gpu_is(probes: Any) -> None:
    cli(probes, "load", "probe")
    out = cli(probes, "leases")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[:3] == ["GPU", "LEASE", "MODEL"]
    assert any(line.split()[2:5] == ["probe", "64", "normal"] for line in out.stdout.splitlines())
    assert "GPU 0: 64 of 1000 MB leased" in out.stdout
    rows = json.loads(cli(probes, "leases", "--json").stdout)
    assert [(r["model_id"], r["vram_mb"]) for r in rows] == [("probe", 64)]
    assert isinstance(rows[0]["age_s"], float)


def test_bad_requests_get_clear_errors_and_change_nothing(probes: Any) -> None:
    unknown = cli(probes, "load", "nope")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("mlsup: ") and "known models: probe, slow" in unknown.stderr
    priority = cli(probes, "load", "probe", "--priority", "urgent")
    assert priority.returncode == 2 and "low, normal, high, critical" in priority.stderr.replace(
        "'", ""
    )
    logs = cli(probes, "logs", "slow")
    assert logs.returncode == 1 and "load it first" in logs.stderr
    rows = json.loads(cli(probes, "status", "--json").stdout)
    assert {row["model"]: row["state"] for row in rows} == {"probe": "unloaded", "slow": "unloaded"}


def test_every_command_has_help_with_examples() -> None:
    for command in ("start", "status", "load", "unload", "stop", "leases", "logs", "bench", "demo"):
        out = run(command, "--help")
        assert out.returncode == 0, command
        assert "examples:" in out.stdout and f"mlsup {command}" in out.stdout, command


def test_a_users_manifest_cannot_name_the_probe_loader(tmp_path: Path) -> None:
    installed = entry_points(group=ENTRY_POINT_GROUP)
    if any(ep.value == PROBE_TARGET for ep in installed):
        pytest.skip("this environment's metadata predates the entry point's removal: reinstall")
    config = tmp_path / "mlsup.toml"
    config.write_text('[models.p]\nloader = "probe"\npath = "probe.txt"\n')
    env = {k: v for k, v in os.environ.items() if k != LOADERS_ENV}
    env["MLSUP_RUNTIME_DIR"] = str(tmp_path / "rt")
    out = subprocess.run(
        [*MLSUP, "start", "--config", str(config)],
        capture_output=True, text=True, timeout=120, check=False, env=env,
    )  # fmt: skip
    assert out.returncode == 1
    assert "unknown loader 'probe'; known loaders: gguf" in out.stderr


def test_load_on_a_terminal_draws_a_live_bar_then_says_ready(probes: Any) -> None:
    controller, terminal = pty.openpty()
    env = {**os.environ, "MLSUP_RUNTIME_DIR": str(probes.runtime), "TERM": "xterm",
           "COLUMNS": "120", "NO_COLOR": ""}  # fmt: skip
    process = subprocess.Popen([*MLSUP, "load", "slow"], stdout=terminal, stderr=terminal, env=env)
    os.close(terminal)
    output = b""
    while chunk := _read_pty(controller):
        output += chunk
    os.close(controller)
    assert process.wait(60) == 0
    text = output.decode(errors="replace")
    assert "slow: starting" in text  # the live display, redrawn in place
    assert "\x1b[" in text and "━" in text  # drawn with colour and a bar
    assert "slow is ready: pid " in text


def _read_pty(fd: int) -> bytes:
    """What the terminal shows next; b"" once the program closed it."""
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO: every writer is gone
        return b""
