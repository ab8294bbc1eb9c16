"""A worker process as the supervisor sees it (trio's Process: ``returncode`` always current, a
repr that says how it ended, termination that escalates SIGTERM → grace → SIGKILL)."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import time
from multiprocessing.context import BaseContext
from typing import Any

from mlsup import defaults
from mlsup.process_identity import start_token

__all__ = ["WorkerProcess", "describe_exit", "kill_group", "start_off_loop"]


def describe_exit(returncode: int | None) -> str:
    """``running``, ``exited with code 3`` or ``exited with signal SIGKILL``."""
    if returncode is None:
        return "running"
    if returncode < 0:
        try:
            return f"exited with signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"exited with signal {-returncode}"
    return f"exited with code {returncode}"


def kill_group(pid: int, sig: int) -> None:
    """Send sig to pid's process group (the worker leads its own), else to pid alone."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        # Not yet a group leader (it calls setsid first thing), or already gone.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


class WorkerProcess:
    """One worker, started from the template process (multiprocessing's forkserver).

    The template has already imported the runtimes, so a start costs a fork, not an import of
    torch. ``sentinel`` becomes readable the moment the process ends.
    """

    def __init__(self, context: BaseContext, target: Any, config: dict[str, Any]) -> None:
        self._process: multiprocessing.process.BaseProcess = context.Process(  # type: ignore[attr-defined]
            target=target, args=(config,), name=f"mlsup-worker-{config['model']['id']}"
        )
        self.model_id: str = config["model"]["id"]
        self.started_at = 0.0
        self.start_token = ""
        self._pid: int | None = None
        self._returncode: int | None = None

    def start(self) -> None:
        self._process.start()
        self._pid = self._process.pid
        self.started_at = time.monotonic()
        # Empty if it died at once: a state file then records nothing to kill.
        self.start_token = start_token(self.pid) or ""

    @property
    def pid(self) -> int:
        assert self._pid is not None, "not started"
        return self._pid

    @property
    def sentinel(self) -> int:
        return self._process.sentinel

    @property
    def returncode(self) -> int | None:
        """None while running; the exit code, or minus the signal number, once it ended."""
        if self._returncode is None:
            self._process.join(0)
            self._returncode = self._process.exitcode
        return self._returncode

    def __repr__(self) -> str:
        return f"<WorkerProcess {self.model_id} pid={self._pid} {describe_exit(self.returncode)}>"

    async def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the end (or the timeout) without polling: the sentinel wakes us."""
        if self.returncode is not None:
            return self.returncode
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ended.done():
                ended.set_result(None)

        loop.add_reader(self.sentinel, wake)
        try:
            await asyncio.wait_for(ended, timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            loop.remove_reader(self.sentinel)
        return self.returncode

    async def terminate(self, grace: float = defaults.TERMINATE_GRACE_S) -> int:
        """SIGTERM the group, wait up to ``grace``, then SIGKILL it; returns the return code."""
        if self.returncode is None:
            kill_group(self.pid, signal.SIGTERM)
            if await self.wait(grace) is None:
                kill_group(self.pid, signal.SIGKILL)
        code = await self.wait(None)
        assert code is not None
        # The group may hold children of the worker (a runtime's helpers): never leave them.
        kill_group(self.pid, signal.SIGKILL)
        return code

    def kill(self) -> None:
        """SIGKILL the whole group now."""
        kill_group(self.pid, signal.SIGKILL)

    def close(self) -> None:
        """Free the process object's resources once it has ended (pid and code stay known)."""
        if self.returncode is not None:
            with contextlib.suppress(ValueError):
                self._process.close()


async def start_off_loop(worker: WorkerProcess) -> None:
    """Start worker in a thread: a fork server still importing its runtimes (torch, under load:
    many seconds) must not stall the event loop, where lease renewals run. A start cancelled
    half-way (a drain) still finishes, and its process is stopped: none is left behind."""
    started = asyncio.ensure_future(asyncio.to_thread(worker.start))
    try:
        await asyncio.shield(started)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await started
            await worker.terminate(0)
        raise
