"""The seed's Patterns 1-3 (examples/), run as scripts exactly as a user runs them, against
the packaged SmolLM2 and the real Redis; and the example runner's own ``pytest``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlsup.testing.redis import TestRedis

from .service_helpers import EXAMPLES, FEATURE_RUNNER, ROOT, runner_config


def run(args: list[str], config: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLSUP_CONFIG": str(config), "PYTHONPATH": str(ROOT)}
    env.pop("MLSUP_REDIS_URL", None)
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture
def config(tmp_path: Path, redis_server: TestRedis, redis_prefix: str) -> Path:
    return runner_config(tmp_path, EXAMPLES / "mlsup.toml", redis_server.url, redis_prefix)


def run_example(script: str, config: Path) -> str:
    """Run ``examples/<script>``; its output, once it exited 0."""
    out = run([sys.executable, str(EXAMPLES / script)], config)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def answered(stdout: str, label: str) -> str:
    """The text after ``label:`` on the line that starts with it."""
    line = next(x for x in stdout.splitlines() if x.startswith(f"{label}:"))
    return line.split(":", 1)[1].strip()


def test_pattern1_preloads_under_a_lease_answers_and_releases(config: Path) -> None:
    stdout = run_example("pattern1_service.py", config)
    assert "lease: my-model 8000 MB on GPU 0" in stdout
    assert answered(stdout, "answer")
    assert "leases held after shutdown: 0" in stdout


def test_pattern2_answers_once_and_keeps_no_lease(config: Path) -> None:
    stdout = run_example("pattern2_on_demand.py", config)
    assert answered(stdout, "answer")
    assert "leases held after the call: 0" in stdout


def test_pattern3_loads_each_model_type_under_its_own_lease(config: Path) -> None:
    stdout = run_example("pattern3_multi_model.py", config)
    assert "leases: [('ministral-3b', 4000), ('saul-7b', 8000)]" in stdout
    assert answered(stdout, "fast") and answered(stdout, "legal")


def test_the_example_runners_own_tests_pass(
    tmp_path: Path, redis_server: TestRedis, redis_prefix: str
) -> None:
    config = runner_config(tmp_path, FEATURE_RUNNER / "mlsup.toml", redis_server.url, redis_prefix)
    out = run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        config,
        cwd=FEATURE_RUNNER,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 passed" in out.stdout
