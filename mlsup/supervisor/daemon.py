"""The supervisor: leases VRAM, then runs one worker process per model, and keeps them alive.

Everything here runs on one asyncio event loop, and every background task runs in the task
group of :meth:`Supervisor.serve`: a bug in one ends the supervisor cleanly (every worker
drained, every lease released) instead of being logged and forgotten. What to do about an
event is decided by the pure :func:`mlsup.supervisor.decide.decide`; this module only executes
its actions (:mod:`mlsup.supervisor.lifecycle`) and feeds it events: worker exits, preemption
requests, housekeeping ticks.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from mlsup import defaults
from mlsup.contracts import ExitReason, ModelStatus, WorkerConfig, to_wire
from mlsup.errors import (
    ConfigError,
    DeviceError,
    LeaseError,
    MlsupError,
    ModelLoadError,
    TransportError,
)
from mlsup.ipc.aserver import AsyncServer
from mlsup.ipc.shm import sweep_orphans
from mlsup.kit.devices import DeviceKind, parse_devices
from mlsup.kit.leases import GPUBoss, LeaseTiming, PreemptionRequest, Priority
from mlsup.kit.loaders import get_loader
from mlsup.kit.vram_usage import vram_usage
from mlsup.kit.worker import run_worker
from mlsup.process_identity import ProcessIdentity
from mlsup.supervisor import recovery
from mlsup.supervisor.config import SupervisorConfig
from mlsup.supervisor.control import ControlPlane
from mlsup.supervisor.decide import (
    EventIn,
    Limits,
    PreemptionAsked,
    StopAsked,
    Tick,
    decide,
    implicit_load_refused,
)
from mlsup.supervisor.lifecycle import Lifecycle
from mlsup.supervisor.models import LastStop, ModelRecord
from mlsup.supervisor.process import WorkerProcess, start_off_loop
from mlsup.supervisor.restart import RestartPolicy
from mlsup.supervisor.sidecars import Sidecars, SidecarSpec, sidecar_specs
from mlsup.supervisor.states import Event, ModelState
from mlsup.supervisor.template import launch_template, wait_for_template

__all__ = ["Supervisor"]

_SETTLED = (ModelState.READY, ModelState.UNLOADED, ModelState.FAILED)
_LEASE_FAILURES = (LeaseError, DeviceError, ModelLoadError, ConfigError, TransportError)


class Supervisor:
    """Runs the manifest's models. Create, :meth:`start`, then :meth:`serve` until stopped."""

    def __init__(
        self,
        config: SupervisorConfig,
        *,
        log: Callable[[str], None] = print,
        sidecars: Sequence[SidecarSpec] | None = None,
    ) -> None:
        self.config = config
        self.paths = config.paths
        self.log = log
        self.settings = s = config.settings
        self.limits = Limits(
            restart=RestartPolicy(
                initial_s=s.restart_backoff_initial_s,
                factor=s.restart_backoff_factor,
                max_s=s.restart_backoff_max_s,
                max_crashes=s.restart_max_crashes,
                window_s=s.restart_window_s,
                cooldown_s=s.restart_failed_cooldown_s,
            ),
            load_stall_timeout_s=s.load_stall_timeout_s,
            terminate_grace_s=s.terminate_grace_s,
            heartbeat_s=s.heartbeat_s,
            heartbeat_misses=s.heartbeat_misses,
            hung_call_s=s.hung_call_s,
            vram_over_margin_mb=s.vram_over_margin_mb,
            vram_over_for_s=s.vram_over_for_s,
        )
        self._vram = vram_usage()
        self.models = {mid: ModelRecord(spec) for mid, spec in config.manifest.models.items()}
        self._lock = recovery.RunLock(self.paths)
        self._embedded: Any = None
        self._boss: GPUBoss | None = None
        self._server = AsyncServer(f"ipc://{self.paths.control}")
        self._context = multiprocessing.get_context("forkserver")
        self._simulated: set[int] = set()
        self._stopping = asyncio.Event()
        self._group: asyncio.TaskGroup | None = None
        self.lifecycle = Lifecycle(self)
        if sidecars is None:  # None: what the configuration asks for (the [http] table...)
            sidecars = sidecar_specs(config)
        restart = self.limits.restart
        self.sidecars = Sidecars(
            sidecars, log=log, policy=lambda: dataclasses.replace(restart, _crashes=deque())
        )

    # -- start and stop -------------------------------------------------------------------------

    async def start(self) -> None:
        """Lock the runtime dir, clean up after a crashed predecessor, connect, listen."""
        self._lock.acquire()
        try:
            previous = recovery.read_previous(self.paths)
            for line in recovery.reap_previous(self.paths, previous):
                self.log(f"recovery: {line}")
            self.paths.logs.mkdir(mode=defaults.RUNTIME_DIR_MODE, exist_ok=True)
            url, timing = self.config.redis_url, LeaseTiming()
            if url is None:
                from mlsup.kit.embedded_redis import EmbeddedRedis

                self._embedded = EmbeddedRedis(self.paths.root)
                url = self._embedded.start()
                # A Redis we just started has never held a lease: no settle window needed.
                timing = dataclasses.replace(timing, settle_s=0.0)
                self.log(f"started embedded Redis at {url}")
            devices = self.config.devices or None
            self._simulated = {
                d.index for d in parse_devices(devices or []) if d.kind is not DeviceKind.GPU
            }
            prefix = self.config.manifest.redis.prefix
            self._boss = GPUBoss(url, prefix, devices, timing=timing)
            await self._boss.connect()
            for line in await recovery.release_previous(self._boss, previous):
                self.log(f"recovery: {line}")
            models = [(s.loader, s.path) for s in self.config.manifest.models.values()]
            # Ready only once the template is: started on this (main) thread, whose end is the
            # supervisor's, then awaited off the loop, before the control plane binds.
            launch_template(self._context, models)
            await asyncio.to_thread(wait_for_template, self._context)
            ControlPlane(self).register(self._server)
            self._server.bind()
        except BaseException:
            await self._close_resources()
            raise
        gpus = ", ".join(f"{i}: {mb} MB" for i, mb in sorted(self._boss.capacities.items()))
        self.log(
            f"supervising {len(self.models)} model(s) on {gpus}; control {self._server.endpoint}"
        )
        await self.sidecars.start()

    async def serve(self) -> None:
        """Serve until :meth:`stop` (or SIGTERM/SIGINT), then shut down cleanly.

        Every background task runs in one task group: an unexpected error in any of them ends
        serving (after the same clean shutdown) and is raised from here.
        """
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                server = group.create_task(self._server.serve())
                housekeeping = group.create_task(self._housekeeping())
                for record in self.models.values():
                    if record.spec.preload:
                        await self.ensure(record.id, wait=False)
                await self._stopping.wait()
                housekeeping.cancel()
                await self.shutdown()
                server.cancel()
        finally:
            self._group = None
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await self.shutdown()  # after a failure above; nothing to do once drained
            await self._server.close()

    def stop(self) -> None:
        """Ask :meth:`serve` to shut down."""
        self._stopping.set()

    async def shutdown(self) -> None:
        """Drain every model, release every lease, remove what we own."""
        await self.sidecars.stop()  # first: no new requests while the models drain
        if self._boss is None:
            return
        self.log("stopping: draining every model")
        await asyncio.gather(
            *(self.feed(r, StopAsked(ExitReason.SHUTDOWN)) for r in self.models.values())
        )
        await self._close_resources()

    async def _close_resources(self) -> None:
        if self._boss is not None:
            with contextlib.suppress(MlsupError):
                await self._boss.close()
            self._boss = None
        if self._embedded is not None:
            self._embedded.stop()
            self._embedded = None
        self.paths.state.unlink(missing_ok=True)
        sweep_orphans()
        self._lock.release()

    @property
    def boss(self) -> GPUBoss:
        if self._boss is None:
            raise TransportError("the supervisor is not connected to Redis")
        return self._boss

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run coro in the supervisor's task group."""
        if self._group is None:
            coro.close()
            raise TransportError("the supervisor is not serving")
        return self._group.create_task(coro)

    # -- models ---------------------------------------------------------------------------------

    def record(self, model_id: str) -> ModelRecord:
        """The record of model_id; ModelNotFound listing the known ids otherwise."""
        record = self.models.get(model_id)
        if record is None:
            self.config.manifest.model(model_id)  # raises ModelNotFound with the known ids
            raise AssertionError("unreachable")
        return record

    async def feed(self, record: ModelRecord, event: EventIn) -> None:
        """Decide what event means for the model, and do it."""
        await self.lifecycle.execute(
            record, decide(record.view(self.limits), event, time.monotonic())
        )

    async def ensure(
        self,
        model_id: str,
        priority: Priority | None = None,
        *,
        wait: bool = True,
        timeout: float = defaults.ENSURE_TIMEOUT_S,
        implicit: bool = False,
    ) -> ModelStatus:
        """Load model_id unless it is loaded; with ``wait``, until READY (or its error).

        An ``implicit`` load (a caller's first use) leaves a FAILED model parked until the
        restart policy's cool-down has passed, and raises its :class:`ModelFailed` instead.
        """
        record = self.record(model_id)
        deadline = time.monotonic() + timeout
        while True:
            while record.state is ModelState.DRAINING:
                await self.wait_for(
                    record, lambda: record.state is not ModelState.DRAINING, deadline
                )
            if implicit:
                refusal = implicit_load_refused(record.view(self.limits), time.monotonic())
                if refusal is not None:
                    raise refusal
            if record.state in (ModelState.UNLOADED, ModelState.FAILED):
                record.crash_times = ()
                record.failed_at = None
                record.stop = LastStop(exit_code=record.stop.exit_code)
                record.priority = (
                    priority if priority is not None else Priority.parse(record.spec.priority)
                )
                await record.fire(Event.LOAD)
                record.task = self.spawn(self.bring_up(record))
            if not wait:
                return record.status()
            await self.wait_for(record, lambda: record.state in _SETTLED, deadline)
            if record.state is ModelState.READY:
                return record.status()
            if record.error is not None:
                raise record.error
            # Unloaded without an error: an unload or an idle drain came between the model
            # becoming ready and this waiter running. Load it again, within the deadline.

    async def wait_for(
        self, record: ModelRecord, predicate: Callable[[], bool], deadline: float
    ) -> None:
        """Wait until predicate holds for record; TransportError at the deadline."""
        try:
            async with record.changed:
                await asyncio.wait_for(
                    record.changed.wait_for(predicate), deadline - time.monotonic()
                )
        except TimeoutError:
            stage = record.run.stage if record.run is not None else "-"
            raise TransportError(
                f"model {record.id!r} is still {record.state.value} "
                f"(stage: {stage or '-'}); see `mlsup status` and `mlsup logs`",
                model=record.id,
            ) from None

    async def bring_up(self, record: ModelRecord) -> None:
        """LEASING → STARTING: lease (unless still held after a crash), then spawn."""
        if record.lease is None or not record.lease.held:
            record.lease = None
            record.mark("lease_requested")
            try:
                vram_mb = record.estimate_mb
                if vram_mb is None:
                    vram_mb = await asyncio.to_thread(self._estimate, record)
                record.estimate_mb = vram_mb
                if record.run is not None:
                    record.run.stage = f"waiting for {vram_mb} MB"
                lease = await self.boss.acquire(
                    vram_mb,
                    record.id,
                    record.priority,
                    timeout=self.settings.lease_acquire_timeout_s,
                )
            except _LEASE_FAILURES as exc:
                record.stop = dataclasses.replace(record.stop, note=str(exc), error=exc)
                await record.fire(Event.LEASE_FAILED)
                return
            record.lease = lease
            self.save_state()
            record.mark("lease_granted")
            lease.on_preempt(lambda request: self._preempted(record, request))
        await record.fire(Event.LEASE_GRANTED)
        await self._spawn_worker(record)

    def _estimate(self, record: ModelRecord) -> int:
        return get_loader(record.spec.loader)().estimate_vram(record.spec)

    async def _spawn_worker(self, record: ModelRecord) -> None:
        assert record.lease is not None
        run = record.new_run()
        gpu = record.lease.gpu
        config = WorkerConfig(
            model=record.spec.to_dict(),
            generation=run.generation,
            token=run.token,
            endpoint=f"ipc://{self.paths.worker_socket(record.id, run.generation)}",
            control=self._server.endpoint,
            supervisor_pid=os.getpid(),
            log=str(self.paths.worker_log(record.id)),
            env={
                "CUDA_VISIBLE_DEVICES": "" if gpu in self._simulated else str(gpu),
                "MLSUP_LEASED_MB": str(record.lease.vram_mb),
                "MLSUP_MODEL": record.id,
            },
            heartbeat_s=self.settings.heartbeat_s,
            lease_until=record.lease_until(self.boss.timing.ttl_s),
            max_message_bytes=self.settings.max_message_bytes,
        )
        worker = WorkerProcess(self._context, run_worker, to_wire(config))
        record.mark("spawned")
        await start_off_loop(worker)
        if worker.start_token:  # the lease outlives us while its worker runs (see leases.owner)
            user = ProcessIdentity(worker.pid, worker.start_token)
            try:
                await self.boss.set_users(record.lease, [user])
            except (LeaseError, TransportError) as exc:  # lost: the next Tick drains it
                self.log(f"{record.id}: worker pid {user.pid} not recorded on its lease: {exc}")
        run.process = worker
        self.save_state()
        self.log(
            f"{record.id}: started worker pid {worker.pid} on GPU {gpu} ({record.lease.vram_mb} MB)"
        )
        run.watcher = self.spawn(self.lifecycle.watch(record, worker))

    def _preempted(self, record: ModelRecord, request: PreemptionRequest) -> None:
        self.spawn(self.feed(record, PreemptionAsked(request.remaining_s, request.requester)))

    async def release(self, record: ModelRecord) -> None:
        """Give the model's lease back (if it still holds one)."""
        lease, record.lease = record.lease, None
        if lease is not None and self._boss is not None:
            with contextlib.suppress(LeaseError, TransportError):
                await self._boss.release(lease)
            self.save_state()

    async def _housekeeping(self) -> None:
        """Idle unloading, lost leases, stalled loads and hung workers, once a second; and the
        shared memory that dead processes (a SIGKILLed client) left, every SHM_SWEEP_INTERVAL_S."""
        next_sweep = time.monotonic()
        while True:
            await asyncio.sleep(defaults.HOUSEKEEPING_INTERVAL_S)
            reading = await asyncio.to_thread(self._vram.read)
            for record in list(self.models.values()):
                record.sample_cpu()
                record.sample_vram(reading, self.limits)
                await self.feed(record, Tick())
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + defaults.SHM_SWEEP_INTERVAL_S
                swept = await asyncio.to_thread(sweep_orphans)
                if swept:
                    self.log(f"unlinked {len(swept)} shared-memory segment(s) of dead processes")

    def save_state(self) -> None:
        """Write the state file: the workers a successor must reap and the leases it must
        release if we crash."""
        recovery.save_records(self.paths, self.models.values())
