"""What the supervisor knows about one model: its state, lease, worker and counters."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from mlsup.errors import MlsupError
from mlsup.kit.leases import GPULease, Priority
from mlsup.kit.manifest import ModelSpec
from mlsup.supervisor.process import WorkerProcess, describe_exit
from mlsup.supervisor.restart import RestartPolicy
from mlsup.supervisor.states import Event, ModelState, next_state

__all__ = ["ModelRecord"]


@dataclass(eq=False)
class ModelRecord:
    """One manifest model under supervision. Mutated only on the supervisor's event loop."""

    spec: ModelSpec
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    state: ModelState = ModelState.UNLOADED
    priority: Priority = Priority.NORMAL
    lease: GPULease | None = None
    worker: WorkerProcess | None = None
    generation: int = 0
    token: str = ""
    endpoint: str | None = None
    estimate_mb: int | None = None
    memory_mb: int | None = None
    restarts: int = 0
    requests: int = 0
    last_activity: float = field(default_factory=time.monotonic)
    progress_at: float = field(default_factory=time.monotonic)
    stage: str = ""
    bytes_read: int | None = None  #: of the model's files, while loading (worker.progress)
    bytes_total: int | None = None
    exit_code: int | None = None  #: how its last worker ended (minus the signal if killed)
    reason: str | None = None  #: why it was last drained or failed
    error: MlsupError | None = None  #: what callers waiting for it are told
    oom_reported: bool = False
    #: When each lifecycle step last happened (``time.monotonic()``, which is system-wide on
    #: Linux, so other processes on the host can compare): ``lease_requested``,
    #: ``lease_granted``, ``spawned``, ``worker_started`` (its first report), ``ready``,
    #: ``exited`` (an unexpected end), ``unloaded`` (drained). Shown in status rows: it breaks
    #: a cold start or a recovery into phases.
    timeline: dict[str, float] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def last_exit(self) -> str | None:
        """How the last worker ended, in words (``exited with signal SIGKILL``)."""
        return None if self.exit_code is None else describe_exit(self.exit_code)

    async def fire(self, event: Event) -> None:
        """Apply a lifecycle event and wake everyone waiting on this model."""
        self.state = next_state(self.state, event)
        async with self.changed:
            self.changed.notify_all()

    def mark(self, step: str) -> None:
        """Record that lifecycle step happened now (see :attr:`timeline`)."""
        self.timeline[step] = time.monotonic()

    def new_generation(self) -> None:
        """A fresh identity for the next worker: reports from older ones are refused."""
        self.generation += 1
        self.token = secrets.token_hex(8)
        self.oom_reported = False
        self.stage = "spawning a worker"
        self.bytes_read = self.bytes_total = None
        self.progress_at = time.monotonic()

    def status(self) -> dict[str, Any]:
        """A row of ``mlsup status``: plain data."""
        now = time.monotonic()
        lease = self.lease if self.lease is not None and self.lease.held else None
        return {
            "model": self.id,
            "loader": self.spec.loader,
            "state": self.state.value,
            "stage": self.stage if self.state is ModelState.STARTING else "",
            "bytes_read": self.bytes_read if self.state is ModelState.STARTING else None,
            "bytes_total": self.bytes_total if self.state is ModelState.STARTING else None,
            "pid": self.worker.pid if self.worker is not None else None,
            "endpoint": self.endpoint,
            "generation": self.generation,
            "gpu": lease.gpu if lease is not None else None,
            "leased_mb": lease.vram_mb if lease is not None else None,
            "lease_id": lease.id if lease is not None else None,
            "measured_mb": self.memory_mb,
            "restarts": self.restarts,
            "requests": self.requests,
            "idle_s": round(now - self.last_activity, 1)
            if self.state is ModelState.READY
            else None,
            "priority": self.priority.name.lower(),
            "exit_code": self.exit_code,
            "last_exit": self.last_exit,
            "reason": self.reason,
            "error": self.error.to_wire() if self.error is not None else None,
            "timeline": dict(self.timeline),
        }
