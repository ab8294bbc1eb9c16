"""The supervisor's control plane: what tools (``mlsup status``, the proxy) and its own workers
may ask of it. Every request is a map of plain data, checked here; workers prove who they are
with the token of their generation."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from typing import TYPE_CHECKING, Any

from mlsup import defaults
from mlsup.errors import ConfigError, ModelLoadError, ModelOOM
from mlsup.ipc.aserver import AsyncServer
from mlsup.kit.leases import Priority
from mlsup.supervisor.models import ModelRecord
from mlsup.supervisor.states import Event

if TYPE_CHECKING:
    from mlsup.supervisor.daemon import Supervisor

__all__ = ["ControlPlane"]


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

    async def _status(self, args: Any) -> list[dict[str, Any]]:
        return [record.status() for record in self.sup.models.values()]

    async def _load(self, args: Any) -> dict[str, Any]:
        args = _mapping(args)
        priority = Priority.parse(args["priority"]) if args.get("priority") else None
        timeout = float(args.get("timeout") or defaults.ENSURE_TIMEOUT_S)
        return await self.sup.ensure(
            args.get("model"), priority, wait=bool(args.get("wait", True)), timeout=timeout
        )

    async def _unload(self, args: Any) -> dict[str, Any]:
        record = self.sup.record(_mapping(args).get("model"))
        await self.sup.drain(record, "unloaded on request")
        return record.status()

    async def _stop(self, args: Any) -> dict[str, Any]:
        asyncio.get_running_loop().call_later(0.05, self.sup.stop)  # after this reply is sent
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

    def _worker_record(self, args: Any) -> ModelRecord:
        args = _mapping(args)
        record = self.sup.record(args.get("model"))
        if args.get("token") != record.token or args.get("generation") != record.generation:
            raise ConfigError(f"not the current worker of {record.id!r}", model=record.id)
        record.progress_at = time.monotonic()
        return record

    async def _worker_ready(self, args: Any) -> None:
        record = self._worker_record(args)
        record.endpoint = args["endpoint"]
        record.memory_mb = args.get("memory_mb")
        record.last_activity = time.monotonic()
        record.stage = ""
        record.mark("ready")
        self.sup.log(
            f"{record.id}: ready in {args.get('load_s', 0):.2f} s, {record.memory_mb} MB measured"
        )
        await record.fire(Event.WORKER_READY)

    async def _worker_progress(self, args: Any) -> None:
        record = self._worker_record(args)
        if record.timeline.get("worker_started", 0.0) < record.timeline.get("spawned", 0.0):
            record.mark("worker_started")  # its first report: the process runs our code
        record.stage = str(_mapping(args).get("stage", ""))

    async def _worker_heartbeat(self, args: Any) -> None:
        record = self._worker_record(args)
        record.requests = int(args.get("requests", record.requests))
        record.memory_mb = args.get("memory_mb", record.memory_mb)
        idle_s = float(args.get("idle_s", 0.0))
        if args.get("busy"):
            idle_s = 0.0
        record.last_activity = max(record.last_activity, time.monotonic() - idle_s)

    async def _worker_failed(self, args: Any) -> None:
        record = self._worker_record(args)
        kind, message = args.get("kind"), str(args.get("message", ""))
        record.memory_mb = args.get("memory_mb", record.memory_mb)
        if kind == "oom":
            record.oom_reported = True
            record.error = ModelOOM(message, model=record.id)
        else:
            record.error = ModelLoadError(
                f"model {record.id!r} failed to load: {message}", model=record.id
            )
        self.sup.log(f"{record.id}: worker reports {kind}: {message}")


def _mapping(args: Any) -> dict[str, Any]:
    if not isinstance(args, dict):
        raise ConfigError("control requests take a map of arguments")
    return args


def _plain(value: Any) -> dict[str, Any]:
    data = dataclasses.asdict(value)
    return {k: (v.name.lower() if isinstance(v, Priority) else v) for k, v in data.items()}
