"""``mlsup demo ipc``: the IPC bridge alone, between real processes.

A server process holds a fixed random projection; this process calls it through the bridge,
with tensors through shared memory, then kills the server and shows the typed error a caller
gets and the sweep of the shared memory it left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mlsup.errors import RequestTimeout
from mlsup.ipc.client import Client
from mlsup.ipc.server import Server
from mlsup.ipc.shm import sweep_orphans

__all__ = ["run_ipc_demo", "serve"]

DIM_IN, DIM_OUT = 4096, 256


def serve(endpoint: str) -> None:
    """The demo's server process."""
    weights = np.random.default_rng(0).standard_normal((DIM_IN, DIM_OUT)).astype(np.float32)
    server = Server(endpoint)
    server.register("project", lambda batch: batch @ weights)
    server.register("pid", lambda _: os.getpid())
    signal.signal(signal.SIGTERM, lambda *_: server.stop(timeout=0))
    server.bind()
    print("ready", flush=True)
    try:
        server.serve()
    finally:
        server.close()


def run_ipc_demo() -> int:
    """The demo; returns the exit status."""
    with tempfile.TemporaryDirectory(prefix="mlsup-demo-") as tmp:
        os.chmod(tmp, 0o700)
        endpoint = f"ipc://{Path(tmp) / 'demo.sock'}"
        server = subprocess.Popen(
            [sys.executable, "-m", "mlsup", "demo", "ipc", "--serve", endpoint],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            server.stdout.readline()
            with Client(endpoint, timeout=10) as client:
                print(f"server process {client.call('pid')} is serving on {endpoint}")
                batch = np.random.default_rng(1).standard_normal((1024, DIM_IN)).astype(np.float32)
                client.call("project", batch)  # warm-up: maps the pooled segments once
                started = time.perf_counter()
                result = client.call("project", batch)
                elapsed = time.perf_counter() - started
                mib = batch.nbytes / (1 << 20)
                print(
                    f"sent a {batch.shape} float32 batch ({mib:.0f} MiB, through shared memory), "
                    f"got {result.shape} back in {elapsed * 1000:.1f} ms"
                )
                expected = batch @ np.random.default_rng(0).standard_normal(
                    (DIM_IN, DIM_OUT)
                ).astype(np.float32)
                print(f"result matches an in-process computation: {np.allclose(result, expected)}")
                del result
                server.kill()
                server.wait()
                print("killed the server with SIGKILL; the next call fails fast and typed:")
                try:
                    client.call("project", batch, timeout=0.5)
                except RequestTimeout as exc:
                    print(f"  {type(exc).__name__}: {exc}")
                swept = sweep_orphans()
                print(f"swept {len(swept)} shared-memory segment(s) the killed server left behind")
        finally:
            if server.poll() is None:
                server.terminate()
                server.wait()
    return 0
