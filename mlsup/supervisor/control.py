"""The supervisor's control plane: what tools (``mlsup status``, the proxy) and its own workers
may ask of it. Every request's arguments are a typed message of :mod:`mlsup.contracts`,
validated on receipt (a malformed one is a ProtocolError and changes nothing); workers prove
who they are with the token of their generation."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from typing import TYPE_CHECKING, Any, TypeVar

from mlsup import defaults
from mlsup.contracts import (
    ExitReason,
    LoadArgs,
    ModelArgs,
    WorkerClaim,
    WorkerFailed,
    WorkerHeartbeat,
    WorkerIdentity,
    WorkerProgress,
    WorkerReady,
    from_wire,
    to_wire,
)
from mlsup.errors import ProtocolError
from mlsup.ipc.aserver import AsyncServer
from mlsup.kit.leases import Priority
from mlsup.supervisor.decide import StopAsked
from mlsup.supervisor.models import ModelRecord
from mlsup.supervisor.states import Event

if TYPE_CHECKING:
    from mlsup.supervisor.daemon import Supervisor

__all__ = ["ControlPlane"]

_Report = TypeVar("_Report", bound=WorkerIdentity)


class ControlPlane:
    """The operations a supervisor serves on its control socket."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.sup = supervisor

    def register(self, server: AsyncServer) -> None:
        """Serve every operation on server."""
        server.register("ping", self._ping)
        server.register("status", self._status)
        server.register("load", self._load)
        server.register("unload", self._unload)
        server.register("stop", self._stop)
        server.register("leases", self._leases)
        server.register("gpus", self._gpus)
        server.register("worker.ready", self._worker_ready)
        server.register("worker.progress", self._worker_progress)
        server.register("worker.heartbeat", self._worker_heartbeat)
        server.register("worker.failed", self._worker_failed)

    async def _ping(self, args: Any) -> dict[str, Any]:
        return {"pid": os.getpid(), "runtime": str(self.sup.paths.root)}

    async def _status(self, args: Any) -> list[Any]:
        return [to_wire(record.status()) for record in self.sup.models.values()]

    async def _load(self, args: Any) -> Any:
        load = from_wire(args, LoadArgs, what="load request")
        priority = Priority.parse(load.priority) if load.priority else None
        timeout = load.timeout if load.timeout is not None else defaults.ENSURE_TIMEOUT_S
        if timeout <= 0:
            raise ProtocolError(f"load timeout must be positive, not {timeout!r}", field="timeout")
        status = await self.sup.ensure(load.model, priority, wait=load.wait, timeout=timeout)
        return to_wire(status)

    async def _unload(self, args: Any) -> Any:
        record = self.sup.record(from_wire(args, ModelArgs, what="unload request").model)
        await self.sup.feed(record, StopAsked(ExitReason.UNLOAD))
        return to_wire(record.status())

    async def _stop(self, args: Any) -> dict[str, Any]:
        # Later, so that this reply is sent before the control socket closes.
        asyncio.get_running_loop().call_later(defaults.STOP_REPLY_DELAY_S, self.sup.stop)
        return {"pid": os.getpid()}

    async def _leases(self, args: Any) -> list[dict[str, Any]]:
        snapshot = await self.sup.boss.snapshot()
        rows = []
        for gpu, usage in sorted(snapshot.items()):
            for lease in usage.leases:
                rows.append({"gpu": gpu, "capacity_mb": usage.capacity_mb, **_plain(lease)})
        return rows

    async def _gpus(self, args: Any) -> list[dict[str, Any]]:
        """Every GPU with its capacity, leases and waiters (``leases`` omits idle GPUs and the
        queue)."""
        snapshot = await self.sup.boss.snapshot()
        return [usage.plain() for _, usage in sorted(snapshot.items())]

    def _report(self, args: Any, kind: type[_Report]) -> tuple[ModelRecord, _Report]:
        claim = from_wire(args, WorkerClaim, what="worker report")
        record = self.sup.record(claim.model)
        run = record.run
        if run is None or claim.token != run.token or claim.generation != run.generation:
            raise ProtocolError(f"not the current worker of {record.id!r}", model=record.id)
        report = from_wire(args, kind, what=f"worker report ({kind.__name__})")
        record.progressed()
        return record, report

    async def _worker_ready(self, args: Any) -> None:
        record, report = self._report(args, WorkerReady)
        record.ready(report)
        self.sup.log(f"{record.id}: ready in {report.load_s:.2f} s, {report.memory_mb} MB measured")
        await record.fire(Event.WORKER_READY)

    async def _worker_progress(self, args: Any) -> None:
        record, report = self._report(args, WorkerProgress)
        record.progressed(report)

    async def _worker_heartbeat(self, args: Any) -> None:
        record, report = self._report(args, WorkerHeartbeat)
        record.heartbeat(report)

    async def _worker_failed(self, args: Any) -> None:
        record, report = self._report(args, WorkerFailed)
        record.failed(report)
        self.sup.log(f"{record.id}: worker reports {report.kind}: {report.message}")


def _plain(value: Any) -> dict[str, Any]:
    data = dataclasses.asdict(value)
    return {k: (v.name.lower() if isinstance(v, Priority) else v) for k, v in data.items()}
