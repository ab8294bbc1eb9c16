"""Talking to a running supervisor: the control plane, and calls to its models' workers.

:class:`SupervisorClient` is what ``mlsup status``/``load``/... use, and what the in-process
proxy builds on. Model calls go straight to the worker's socket; the supervisor is asked only
to load the model and say where it is. A worker that dies during a call is noticed within
``LIVENESS_SLICE_S`` and reported as :class:`WorkerCrashed` with how it ended.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from mlsup import defaults
from mlsup.errors import PeerGone, RequestTimeout, SupervisorUnavailable, WorkerCrashed
from mlsup.ipc.client import Client
from mlsup.runtime import runtime_dir
from mlsup.supervisor.config import RuntimePaths
from mlsup.supervisor.process import process_alive

__all__ = ["ModelHandle", "SupervisorClient"]


class SupervisorClient:
    """A connection to the supervisor of a runtime directory (default: this user's)."""

    def __init__(
        self, runtime: str | Path | None = None, *, timeout: float = defaults.CONTROL_TIMEOUT_S
    ) -> None:
        self.paths = RuntimePaths(Path(runtime) if runtime is not None else runtime_dir())
        if not self.paths.control.exists():
            raise SupervisorUnavailable(
                f"no supervisor is running on {self.paths.root}; start one with `mlsup start`",
                runtime=str(self.paths.root),
            )
        self._control = Client(f"ipc://{self.paths.control}", timeout=timeout)
        self._handles: dict[str, ModelHandle] = {}
        self._lock = threading.Lock()

    def request(self, op: str, args: Any = None, *, timeout: float | None = None) -> Any:
        """One control request; SupervisorUnavailable if the supervisor does not answer."""
        try:
            return self._control.call(op, args, timeout=timeout)
        except RequestTimeout as exc:
            if op in ("load",):
                raise
            raise SupervisorUnavailable(
                f"the supervisor on {self.paths.root} does not answer; is it stopped or hung? "
                "(`mlsup start` starts one)",
                runtime=str(self.paths.root),
            ) from exc

    def ping(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("ping")
        return result

    def status(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("status")
        return result

    def load(
        self,
        model: str,
        *,
        priority: str | None = None,
        wait: bool = True,
        timeout: float = defaults.ENSURE_TIMEOUT_S,
    ) -> dict[str, Any]:
        """Load model (and wait until it serves); returns its status row."""
        args = {"model": model, "priority": priority, "wait": wait, "timeout": timeout}
        result: dict[str, Any] = self.request("load", args, timeout=timeout + 5)
        return result

    def unload(self, model: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("unload", {"model": model}, timeout=60)
        return result

    def stop(self) -> None:
        self.request("stop")

    def leases(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("leases")
        return result

    def model(self, model_id: str) -> ModelHandle:
        """A handle on a supervised model; it is loaded on first use."""
        with self._lock:
            handle = self._handles.get(model_id)
            if handle is None:
                handle = self._handles[model_id] = ModelHandle(self, model_id)
            return handle

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._control.close()

    def __enter__(self) -> SupervisorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ModelHandle:
    """Calls a supervised model's operations on its worker."""

    def __init__(self, supervisor: SupervisorClient, model_id: str) -> None:
        self.supervisor = supervisor
        self.model_id = model_id
        self._lock = threading.Lock()
        self._worker: tuple[int, int, Client] | None = None  # generation, pid, client

    def _connect(self) -> tuple[int, int, Client]:
        with self._lock:
            if self._worker is not None:
                if process_alive(self._worker[1]):
                    return self._worker
                # Unloaded (idle, preempted) or crashed since: ask the supervisor again.
                self._worker[2].close()
                self._worker = None
        row = self.supervisor.load(self.model_id)
        client = Client(row["endpoint"])
        with self._lock:
            if self._worker is not None:  # another thread connected meanwhile
                client.close()
                return self._worker
            self._worker = (row["generation"], row["pid"], client)
            return self._worker

    def _forget(self, generation: int) -> None:
        with self._lock:
            if self._worker is not None and self._worker[0] == generation:
                self._worker[2].close()
                self._worker = None

    def call(self, op: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """``op(*args, **kwargs)`` on the worker; WorkerCrashed if it dies meanwhile."""
        generation, pid, client = self._connect()
        try:
            return client.call(
                op,
                {"args": list(args), "kwargs": kwargs},
                timeout=timeout,
                alive=lambda: process_alive(pid),
            )
        except PeerGone as exc:
            self._forget(generation)
            raise self._crashed(pid) from exc

    def _crashed(self, pid: int) -> WorkerCrashed:
        # The supervisor sees the exit through the process sentinel at the same moment we do;
        # give it a moment to record how the worker ended.
        deadline = time.monotonic() + defaults.CRASH_REPORT_WAIT_S
        while True:
            try:
                row = next(r for r in self.supervisor.status() if r["model"] == self.model_id)
            except SupervisorUnavailable:
                row = None
            if row is not None and row["pid"] != pid and row.get("last_exit"):
                return WorkerCrashed(
                    f"the worker of {self.model_id!r} (pid {pid}) {row['last_exit']}; "
                    "it is being respawned",
                    model=self.model_id,
                    pid=pid,
                    exit=row["last_exit"],
                )
            if row is None or time.monotonic() > deadline:
                message = f"the worker of {self.model_id!r} (pid {pid}) died"
                return WorkerCrashed(message, model=self.model_id, pid=pid)
            time.sleep(0.02)

    def close(self) -> None:
        with self._lock:
            if self._worker is not None:
                self._worker[2].close()
                self._worker = None
