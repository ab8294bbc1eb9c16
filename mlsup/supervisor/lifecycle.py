"""The imperative shell around :func:`mlsup.supervisor.decide.decide`: it executes the actions
on the supervisor's processes, leases and records, and turns worker exits into events."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mlsup.errors import MlsupError
from mlsup.supervisor.decide import (
    Action,
    Drain,
    KillWorker,
    Log,
    MarkFailed,
    RecordCrashes,
    ReleaseLease,
    RespawnAfter,
    SetEstimate,
    Transition,
    WorkerExited,
)
from mlsup.supervisor.models import LastStop, ModelRecord
from mlsup.supervisor.process import WorkerProcess
from mlsup.supervisor.states import Event, ModelState

if TYPE_CHECKING:
    from mlsup.supervisor.daemon import Supervisor

__all__ = ["Lifecycle"]


class Lifecycle:
    """Executes a supervisor's lifecycle actions."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.sup = supervisor

    async def execute(self, record: ModelRecord, actions: Sequence[Action]) -> None:
        """Do actions, in order."""
        for action in actions:
            if isinstance(action, Transition):
                await record.fire(action.event)
            elif isinstance(action, Log):
                self.sup.log(action.text)
            elif isinstance(action, SetEstimate):
                record.estimate_mb = action.vram_mb
            elif isinstance(action, ReleaseLease):
                await self.sup.release(record)
            elif isinstance(action, RecordCrashes):
                record.crash_times = action.times
            elif isinstance(action, RespawnAfter):
                record.stop = dataclasses.replace(
                    record.stop, reason=action.reason, note=action.note
                )
                record.restarts += 1
                record.task = self.sup.spawn(self._respawn(record, action.delay_s))
            elif isinstance(action, MarkFailed):
                await self._fail(record, action)
            elif isinstance(action, Drain):
                await self.drain(record, action)
            elif isinstance(action, KillWorker) and record.worker is not None:
                assert record.run is not None
                record.run.kill_reason, record.run.kill_note = action.reason, action.note
                record.worker.kill()

    async def watch(self, record: ModelRecord, worker: WorkerProcess) -> None:
        """React the moment a worker ends (its sentinel, not polling)."""
        code = await worker.wait()
        assert code is not None
        worker.close()
        if record.worker is not worker or record.state is ModelState.DRAINING:
            return  # a drain owns this worker's end, and records it
        assert record.run is not None
        record.mark("exited")
        record.run.process = None
        record.stop = LastStop(exit_code=code, error=record.run.reported)
        self.sup.save_state()
        await self.sup.feed(record, WorkerExited(worker.pid, code))

    async def _respawn(self, record: ModelRecord, delay_s: float) -> None:
        if record.run is not None:
            record.run.stage = f"respawning in {delay_s:g} s"
        await asyncio.sleep(delay_s)
        await record.fire(Event.BACKOFF_ELAPSED)
        await self.sup.bring_up(record)

    async def _fail(self, record: ModelRecord, action: MarkFailed) -> None:
        record.stop = dataclasses.replace(
            record.stop, reason=action.reason, note=str(action.error), error=action.error
        )
        self.sup.log(f"{record.id}: FAILED: {action.error}")
        record.failed_at = time.monotonic()
        await self.sup.release(record)
        await record.fire(Event.GAVE_UP)

    async def drain(self, record: ModelRecord, action: Drain) -> None:
        """Stop the model's worker (SIGTERM, grace, SIGKILL) and release its lease."""
        if record.state is ModelState.DRAINING:
            await self.sup.wait_for(
                record, lambda: record.state is not ModelState.DRAINING, float("inf")
            )
            return
        if record.state in (ModelState.UNLOADED, ModelState.FAILED):
            return
        await record.fire(Event.DRAIN)
        record.stop = LastStop(
            exit_code=record.stop.exit_code,
            reason=action.reason,
            note=action.note,
            error=action.error,
        )
        task, record.task = record.task, None
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, MlsupError):
                await task
        worker = record.worker
        if worker is not None and record.run is not None:
            # Its watcher would never wake: one process sentinel has one reader, the drain's.
            # Wait for the watcher to end: its cleanup removes the sentinel's reader, and if
            # it ran after the drain's wait added its own, that wait slept the whole grace.
            await _cancelled(record.run.watcher)
            grace = (
                self.sup.settings.terminate_grace_s if action.grace_s is None else action.grace_s
            )
            code = await worker.terminate(grace)
            record.stop = dataclasses.replace(record.stop, exit_code=code)
            record.run.process = None
            self.sup.save_state()
        await self.sup.release(record)
        self.sup.log(f"{record.id}: unloaded ({action.note})")
        record.mark("unloaded")
        await record.fire(Event.DRAINED)


async def _cancelled(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task`` and wait until it has ended (without raising its cancellation)."""
    if task is not None and task is not asyncio.current_task():
        task.cancel()
        await asyncio.wait([task])
