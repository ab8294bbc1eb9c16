"""Helpers of the mlsup.service tests: a runner's manifest on the test Redis, and a runner
process (the example feature runner) on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from mlsup.testing.tiny_models import smollm2_gguf

ROOT = Path(__file__).parents[2]
EXAMPLES = ROOT / "examples"
FEATURE_RUNNER = EXAMPLES / "feature-runner"


def runner_config(directory: Path, template: Path, redis_url: str, prefix: str) -> Path:
    """``template`` (an mlsup.toml of examples/) copied into ``directory`` with the packaged
    SmolLM2 linked where it expects it and a [redis] table for this test's prefix."""
    (directory / "models").mkdir(exist_ok=True)
    link = directory / "models" / "smollm2.gguf"
    if not link.exists():
        link.symlink_to(smollm2_gguf())
    config = directory / "mlsup.toml"
    config.write_text(
        template.read_text() + f'\n[redis]\nurl = "{redis_url}"\nprefix = "{prefix}"\n'
    )
    return config


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_runner(
    config: Path, port: int | None, cwd: Path = FEATURE_RUNNER, **env: str
) -> subprocess.Popen[str]:
    """The example runner (``kv_ml_runner``) served on ``port`` by mlsup.service.serve; with
    ``port=None``, started as the seed says (``python -m kv_ml_runner``), on the port of its
    services.yaml (nearest ``cwd``, else under ``$MLSUP_SERVICES_ROOT``)."""
    code = (
        "from mlsup.service import serve\n"
        "from kv_ml_runner.service import app\n"
        f"serve(app, port={port})\n"
    )
    command = ["-m", "kv_ml_runner"] if port is None else ["-c", code]
    environment = {
        **os.environ,
        "MLSUP_CONFIG": str(config),
        "PYTHONPATH": os.pathsep.join([str(cwd), str(ROOT)]),
        **env,
    }
    environment.pop("MLSUP_REDIS_URL", None)
    return subprocess.Popen(
        [sys.executable, *command],
        cwd=cwd,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_listening(proc: subprocess.Popen[str], url: str, timeout: float = 120.0) -> httpx.Response:
    """The first answer of ``url`` from the runner (it may still be loading)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"runner exited with {proc.returncode}:\n{out}")
        try:
            return httpx.get(url, timeout=5.0)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def wait_health(
    proc: subprocess.Popen[str], base: str, status: int, timeout: float = 120.0
) -> dict:
    """Poll ``/health`` until it answers ``status``; returns its body."""
    deadline = time.monotonic() + timeout
    while True:
        answer = wait_listening(proc, f"{base}/health", timeout)
        if answer.status_code == status:
            body: dict = answer.json()
            return body
        assert time.monotonic() < deadline, f"health stayed {answer.status_code}: {answer.text}"
        time.sleep(0.05)


def stop(proc: subprocess.Popen[str]) -> str:
    """Kill the runner if it still runs; its output."""
    if proc.poll() is None:
        proc.kill()
    out, _ = proc.communicate(timeout=30)
    return out or ""
