"""Helpers for tests and benchmarks of the HTTP gateway: a free loopback port, and waiting
until a gateway (a sidecar, up shortly after its supervisor) answers ``/health``."""

from __future__ import annotations

import contextlib
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["free_port", "load_models", "wait_for_gateway"]


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_gateway(base: str, timeout: float = 60, *, output: str = "") -> None:
    """Wait until ``base``/health answers 200; AssertionError (with ``output``) after
    ``timeout`` seconds."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        assert time.monotonic() < deadline, f"no gateway at {base} after {timeout:g} s\n{output}"
        time.sleep(0.05)


def load_models(sup: Any, models: Sequence[str], attempts: int = 3) -> None:
    """Load ``models`` through a :class:`~mlsup.proxy.SupervisorProxy`, trying a failed load
    again: on a starved machine a lease can expire while its model loads (seen on 2 shared
    cores while the supervisor's first worker spawn waited for its template to import torch)."""
    from mlsup.errors import MlsupError

    for model in models:
        for attempt in range(attempts):
            try:
                sup.load(model)
                break
            except MlsupError as exc:
                if attempt == attempts - 1:
                    raise
                print(f"loading {model} again after: {exc}", file=sys.stderr, flush=True)
