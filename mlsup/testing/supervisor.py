"""A real supervisor process for tests and benchmarks: ``python -m mlsup start`` on a private
runtime directory, with a manifest on a simulated GPU.

::

    sup = RunningSupervisor(tmp_path, manifest(redis_url, prefix, MODELS)).start()
    with sup.client() as client:
        client.model("m").embed(["a"])
    sup.stop()
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlsup.errors import SupervisorUnavailable
from mlsup.proxy import SupervisorProxy
from mlsup.testing.loaders import register_probe

__all__ = ["TEST_SETTINGS", "RunningSupervisor", "manifest"]

#: The ``[supervisor]`` table of test manifests: fast restarts, short grace, quick heartbeats.
TEST_SETTINGS: dict[str, float] = {
    "restart_backoff_initial_s": 0.05,
    "restart_max_crashes": 2,
    "terminate_grace_s": 2,
    "heartbeat_s": 0.2,
    # Hung after 10 s silent and idle, not 2: a loaded test machine can starve a supervisor's
    # loop for seconds. The hang tests set their own.
    "heartbeat_misses": 50,
}

_MANIFEST = """
[redis]
url = "{url}"
prefix = "{prefix}"

[[devices]]
index = 0
memory_mb = {memory_mb}
simulated = true

[supervisor]
"""


def manifest(
    url: str,
    prefix: str,
    models: str,
    *,
    memory_mb: int = 1000,
    acquire_timeout: float = 10,
    **settings: float,
) -> str:
    """A manifest on one simulated GPU of ``memory_mb``, with :data:`TEST_SETTINGS` updated by
    ``settings``, followed by the ``models`` TOML."""
    table = {**TEST_SETTINGS, "lease_acquire_timeout_s": acquire_timeout, **settings}
    lines = "".join(f"{key} = {value!r}\n" for key, value in table.items())
    return _MANIFEST.format(url=url, prefix=prefix, memory_mb=memory_mb) + lines + models


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
        """Start the supervisor; with ``wait``, until it answers a ping."""
        env = {**os.environ, "MLSUP_RUNTIME_DIR": str(self.runtime)}
        register_probe(env)  # test and benchmark manifests use the probe loader
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mlsup", "start", "--config", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait until the supervisor answers; AssertionError with its output if it exits."""
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
        """Everything the supervisor printed so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def client(self, timeout: float = 10) -> SupervisorProxy:
        """A proxy on this supervisor (close it, or use it as a context manager)."""
        return SupervisorProxy(self.runtime, timeout=timeout)

    def row(self, model: str) -> dict[str, Any]:
        """The model's status row."""
        with self.client() as client:
            return next(r for r in client.status() if r["model"] == model)

    def wait_for(
        self, model: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30
    ) -> dict[str, Any]:
        """Poll the model's status row until predicate holds; the row."""
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
        """SIGKILL the supervisor (its workers notice and exit)."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()
