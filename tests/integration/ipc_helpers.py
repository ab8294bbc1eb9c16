"""Helpers of the IPC integration tests: a real server process and /dev/shm inspection."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

PEER = Path(__file__).with_name("ipc_peer.py")


class Peer:
    """A real server process running ipc_peer.py."""

    def __init__(self, endpoint: str, interval: float) -> None:
        self.endpoint = endpoint
        self.process = subprocess.Popen(
            [sys.executable, str(PEER), endpoint, str(interval)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.startswith("ready"), f"peer did not start: {line!r}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def our_segments(pid: int | None = None) -> set[str]:
    """mlsup segments in /dev/shm created by pid (default: any)."""
    prefix = "mlsup-" if pid is None else f"mlsup-{pid}-"
    return {name for name in os.listdir("/dev/shm") if name.startswith(prefix)}
