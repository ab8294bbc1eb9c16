"""A real supervisor process for tests: ``python -m mlsup start`` on a private runtime dir."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mlsup.errors import SupervisorUnavailable
from mlsup.proxy import SupervisorProxy

MANIFEST = """
[redis]
url = "{url}"
prefix = "{prefix}"

[[devices]]
index = 0
memory_mb = {memory_mb}
simulated = true

[supervisor]
restart_backoff_initial_s = 0.05
restart_max_crashes = 2
terminate_grace_s = 2
heartbeat_s = 0.2
lease_acquire_timeout_s = {acquire_timeout}
"""


def manifest(
    url: str, prefix: str, models: str, *, memory_mb: int = 1000, acquire_timeout: float = 10
) -> str:
    return (
        MANIFEST.format(
            url=url, prefix=prefix, memory_mb=memory_mb, acquire_timeout=acquire_timeout
        )
        + models
    )


class RunningSupervisor:
    """``mlsup start --config`` in a child process; :meth:`client` talks to it."""

    def __init__(self, directory: Path, config: str, name: str = "sup") -> None:
        self.directory = directory
        self.runtime = directory / f"rt-{name}"
        self.config = directory / f"{name}.toml"
        self.config.write_text(config)
        (directory / "probe.txt").write_text("probe\n")
        self.log = directory / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> RunningSupervisor:
        env = {**os.environ, "MLSUP_RUNTIME_DIR": str(self.runtime)}
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mlsup", "start", "--config", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(
                    f"supervisor exited {self.process.returncode}:\n{self.output()}"
                )
            try:
                with SupervisorProxy(self.runtime, timeout=1) as client:
                    client.ping()
                return
            except SupervisorUnavailable:
                assert time.monotonic() < deadline, f"supervisor not ready:\n{self.output()}"
                time.sleep(0.05)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def client(self, timeout: float = 10) -> SupervisorProxy:
        return SupervisorProxy(self.runtime, timeout=timeout)

    def row(self, model: str) -> dict[str, Any]:
        with self.client() as client:
            return next(r for r in client.status() if r["model"] == model)

    def wait_for(self, model: str, predicate: Any, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            row = self.row(model)
            if predicate(row):
                return row
            assert time.monotonic() < deadline, f"{model} never got there: {row}\n{self.output()}"
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> int:
        """Stop through the control plane; returns the exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            try:
                with self.client() as client:
                    client.stop()
            except SupervisorUnavailable:
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()
