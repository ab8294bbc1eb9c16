"""Real parts of the dashboard tests: the dashboard server as a child process
(``python -m mlsup.dashboard``), a plain-kit process holding a lease, and headless Chromium."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

#: The simulated GPU of the test manifests (``mlsup.testing.supervisor.manifest``).
DEVICES = [{"index": 0, "memory_mb": 1000, "simulated": True}]

#: Two probe models: ``alpha`` loads slowly enough (2 s) that the page shows it loading and
#: restarting; ``beta`` is quick and of high priority.
MODELS = """
[models.alpha]
loader = "probe"
path = "probe.txt"
vram_mb = 300
options = { load_s = 2.0 }

[models.beta]
loader = "probe"
path = "probe.txt"
vram_mb = 200
priority = "high"
"""

#: Debian's package names, installed by the browser fixture where missing.
CHROMIUM_PACKAGES = ("chromium", "chromium-driver")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RunningDashboard:
    """``python -m mlsup.dashboard --runtime R --listen 127.0.0.1:PORT`` in a child process."""

    def __init__(self, runtime: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/ui/"
        self.log = log
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mlsup.dashboard", "--runtime", str(runtime),
                 "--listen", f"127.0.0.1:{self.port}"],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def wait_ready(self, timeout: float = 60) -> dict[str, Any]:
        """Wait until it serves its first snapshot; that snapshot."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise AssertionError(f"dashboard exited {code}:\n{self.output()}")
            try:
                reply = httpx.get(self.url + "api/snapshot", timeout=5)
                if reply.status_code == 200 and reply.json() is not None:
                    snapshot: dict[str, Any] = reply.json()
                    return snapshot
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"dashboard not ready:\n{self.output()}"
            time.sleep(0.05)

    def snapshot(self) -> dict[str, Any]:
        snapshot: dict[str, Any] = httpx.get(self.url + "api/snapshot", timeout=5).json()
        return snapshot

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> int:
        """SIGTERM, as a service manager would; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()  # a dashboard deaf to SIGTERM is a failure, not a detail
                self.process.wait()
                raise AssertionError(f"ignored SIGTERM for 30 s:\n{self.output()}") from None
        return self.process.returncode


class LeaseHolder:
    """A plain-kit process (no supervisor) holding a lease until told to go: what another
    feature on the machine looks like to the dashboard."""

    def __init__(self, url: str, prefix: str, vram_mb: int, model_id: str, priority: str) -> None:
        program = (
            "import asyncio, sys\n"
            "from mlsup.kit.leases import GPUBoss\n"
            "async def main():\n"
            f"    boss = GPUBoss({url!r}, {prefix!r}, {DEVICES!r})\n"
            f"    async with boss.acquire({vram_mb}, {model_id!r}, {priority!r}) as lease:\n"
            "        print('ready', lease.id, flush=True)\n"
            "        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)\n"
            "    await boss.close()\n"
            "asyncio.run(main())\n"
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", program],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().split()
        assert line[:1] == ["ready"], f"lease holder failed to start: {line!r}"
        self.lease_id = line[1]

    def release(self) -> None:
        """Let it release its lease and exit."""
        assert self.process.stdin is not None and self.process.stdout is not None
        if self.process.poll() is None:
            self.process.stdin.write("\n")
            self.process.stdin.flush()
            self.process.wait(30)
        self.process.stdin.close()
        self.process.stdout.close()


def chromium_paths() -> tuple[str, str] | None:
    """(chromium, chromedriver) when both are installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def install_chromium() -> str | None:
    """Install Debian's chromium and chromium-driver when missing (as root, with apt-get, as
    `make test` runs on a fresh machine); None when they are there, else why they cannot be."""
    if chromium_paths() is not None:
        return None
    if shutil.which("apt-get") is None:
        return "chromium/chromedriver are not installed and there is no apt-get to install them"
    if os.geteuid() != 0:
        return (
            "chromium/chromedriver are not installed and installing them needs root: "
            f"sudo apt-get install -y {' '.join(CHROMIUM_PACKAGES)}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}

    def apt_get(*args: str) -> subprocess.CompletedProcess[str]:
        command = ["apt-get", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, check=False)

    result = apt_get("install", "-y", *CHROMIUM_PACKAGES)
    if result.returncode != 0:  # a fresh machine has no package lists yet
        apt_get("update")
        result = apt_get("install", "-y", *CHROMIUM_PACKAGES)
    if result.returncode != 0 or chromium_paths() is None:
        tail = (result.stdout + result.stderr)[-500:]
        return f"could not install {' '.join(CHROMIUM_PACKAGES)} with apt-get:\n{tail}"
    return None
