"""The supervisor: leases VRAM, then runs one worker process per model, and keeps them alive.

Everything here runs on one asyncio event loop. The lifecycle decisions are the pure table in
:mod:`mlsup.supervisor.states` and the policy in :mod:`mlsup.supervisor.restart`; this module
does the I/O around them: leases (:class:`~mlsup.kit.leases.GPUBoss`), processes
(:class:`~mlsup.supervisor.process.WorkerProcess`), and the control plane
(:class:`~mlsup.ipc.aserver.AsyncServer`), where both tools and workers talk to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Coroutine, Sequence
from multiprocessing import forkserver
from typing import Any

from mlsup import defaults
from mlsup.errors import (
    ConfigError,
    DeviceError,
    LeaseError,
    MlsupError,
    ModelFailed,
    ModelLoadError,
    Preempted,
    TransportError,
)
from mlsup.ipc.aserver import AsyncServer
from mlsup.ipc.shm import sweep_orphans
from mlsup.kit.devices import DeviceKind, parse_devices
from mlsup.kit.leases import GPUBoss, LeaseTiming, PreemptionRequest, Priority
from mlsup.kit.loaders import get_loader
from mlsup.kit.worker import EXIT_LOAD_ERROR, EXIT_OOM, run_worker
from mlsup.supervisor.config import SupervisorConfig
from mlsup.supervisor.control import ControlPlane
from mlsup.supervisor.models import ModelRecord
from mlsup.supervisor.process import WorkerProcess
from mlsup.supervisor.recovery import RunLock, WorkerRecord, reap_previous, write_state
from mlsup.supervisor.restart import RestartPolicy
from mlsup.supervisor.sidecars import Sidecars, SidecarSpec, raw_tables, sidecar_specs
from mlsup.supervisor.states import Event, ModelState

__all__ = ["PRELOAD", "Supervisor"]

#: Modules the worker template imports once, by loader: a worker start is then a fork.
PRELOAD: dict[str, tuple[str, ...]] = {
    "gguf": ("llama_cpp",),
    "validated-llama": ("llama_cpp",),
    "hf": ("torch", "transformers"),
    "diffusers": ("torch", "diffusers", "transformers"),
    "whisper": ("faster_whisper",),
    "onnx": ("onnxruntime",),
}
_ALWAYS_PRELOAD = ("numpy", "psutil", "zmq", "msgpack", "mlsup.kit.worker", "mlsup.kit.loaders")
#: How much to raise a model's estimate after it ran out of memory.
OOM_GROWTH = 1.5


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
        self.settings = config.settings
        self.models = {
            model_id: ModelRecord(spec, policy=self._restart_policy())
            for model_id, spec in config.manifest.models.items()
        }
        self._lock = RunLock(self.paths)
        self._embedded: Any = None
        self._boss: GPUBoss | None = None
        self._server = AsyncServer(f"ipc://{self.paths.control}")
        self._context = multiprocessing.get_context("forkserver")
        self._simulated: set[int] = set()
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        if sidecars is None:  # None: what the configuration asks for (the [http] table...)
            sidecars = sidecar_specs(config, raw_tables(config))
        self.sidecars = Sidecars(sidecars, log=log, policy=self._restart_policy)

    def _restart_policy(self) -> RestartPolicy:
        s = self.settings
        return RestartPolicy(
            initial_s=s.restart_backoff_initial_s,
            factor=s.restart_backoff_factor,
            max_s=s.restart_backoff_max_s,
            max_crashes=s.restart_max_crashes,
            window_s=s.restart_window_s,
        )

    # -- start and stop -------------------------------------------------------------------------

    async def start(self) -> None:
        """Lock the runtime dir, clean up after a crashed predecessor, connect, listen."""
        self._lock.acquire()
        try:
            for line in reap_previous(self.paths):
                self.log(f"recovery: {line}")
            self.paths.logs.mkdir(mode=0o700, exist_ok=True)
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
            self._start_template()
            ControlPlane(self).register(self._server)
            self._server.bind()
        except BaseException:
            await self._close_resources()
            raise
        for record in self.models.values():
            if record.spec.preload:
                await self.ensure(record.id, wait=False)
        gpus = ", ".join(f"{i}: {mb} MB" for i, mb in sorted(self._boss.capacities.items()))
        self.log(
            f"supervising {len(self.models)} model(s) on {gpus}; control {self._server.endpoint}"
        )
        await self.sidecars.start()

    def _start_template(self) -> None:
        modules = list(_ALWAYS_PRELOAD)
        for spec in self.config.manifest.models.values():
            modules.extend(m for m in PRELOAD.get(spec.loader, ()) if m not in modules)
        self._context.set_forkserver_preload(modules)
        forkserver.ensure_running()  # pay the imports now, not at the first load

    async def serve(self) -> None:
        """Serve until :meth:`stop` (or SIGTERM/SIGINT), then shut down cleanly."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        server = asyncio.ensure_future(self._server.serve())
        housekeeping = asyncio.ensure_future(self._housekeeping())
        try:
            await self._stopping.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            housekeeping.cancel()
            await self.shutdown()
            server.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await server
            await self._server.close()
            with contextlib.suppress(asyncio.CancelledError):
                await housekeeping

    def stop(self) -> None:
        """Ask :meth:`serve` to shut down."""
        self._stopping.set()

    async def shutdown(self) -> None:
        """Drain every model, release every lease, remove what we own."""
        await self.sidecars.stop()  # first: no new requests while the models drain
        self.log("stopping: draining every model")
        await asyncio.gather(*(self.drain(r, "supervisor stopped") for r in self.models.values()))
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

    # -- bringing models up ---------------------------------------------------------------------

    def record(self, model_id: Any) -> ModelRecord:
        if not isinstance(model_id, str):
            raise ConfigError("model id must be a string")
        record = self.models.get(model_id)
        if record is None:
            self.config.manifest.model(model_id)  # raises ModelNotFound with the known ids
            raise AssertionError("unreachable")
        return record

    async def ensure(
        self,
        model_id: str,
        priority: Priority | None = None,
        *,
        wait: bool = True,
        timeout: float = defaults.ENSURE_TIMEOUT_S,
    ) -> dict[str, Any]:
        """Load model_id unless it is loaded; with ``wait``, until READY (or its error)."""
        record = self.record(model_id)
        deadline = time.monotonic() + timeout
        settled = (ModelState.READY, ModelState.UNLOADED, ModelState.FAILED)
        while True:
            while record.state is ModelState.DRAINING:
                await self._wait_for(
                    record, lambda: record.state is not ModelState.DRAINING, deadline
                )
            if record.state in (ModelState.UNLOADED, ModelState.FAILED):
                record.policy.reset()
                record.error = None
                record.reason = None
                record.priority = (
                    priority if priority is not None else Priority.parse(record.spec.priority)
                )
                await record.fire(Event.LOAD)
                record.task = self._spawn_task(self._bring_up(record))
            if not wait:
                return record.status()
            await self._wait_for(record, lambda: record.state in settled, deadline)
            if record.state is ModelState.READY:
                return record.status()
            if record.error is not None:
                raise record.error
            # Unloaded without an error: an unload or an idle drain came between the model
            # becoming ready and this waiter running. Load it again, within the deadline.

    async def _wait_for(
        self, record: ModelRecord, predicate: Callable[[], bool], deadline: float
    ) -> None:
        try:
            async with record.changed:
                await asyncio.wait_for(
                    record.changed.wait_for(predicate), deadline - time.monotonic()
                )
        except asyncio.TimeoutError:
            raise TransportError(
                f"model {record.id!r} is still {record.state.value} "
                f"(stage: {record.stage or '-'}); see `mlsup status` and `mlsup logs`",
                model=record.id,
            ) from None

    async def _bring_up(self, record: ModelRecord) -> None:
        """LEASING → STARTING: lease (unless still held after a crash), then spawn."""
        if record.lease is None or not record.lease.held:
            record.lease = None
            record.mark("lease_requested")
            try:
                vram_mb = record.estimate_mb
                if vram_mb is None:
                    vram_mb = await asyncio.to_thread(self._estimate, record)
                record.estimate_mb = vram_mb
                record.stage = f"waiting for {vram_mb} MB"
                lease = await self.boss.acquire(
                    vram_mb,
                    record.id,
                    record.priority,
                    timeout=self.settings.lease_acquire_timeout_s,
                )
            except (LeaseError, DeviceError, ModelLoadError, ConfigError, TransportError) as exc:
                record.error = exc
                record.reason = str(exc)
                await record.fire(Event.LEASE_FAILED)
                return
            record.lease = lease
            record.mark("lease_granted")
            lease.on_preempt(lambda request: self._preempted(record, request))
        await record.fire(Event.LEASE_GRANTED)
        self._spawn_worker(record)

    def _estimate(self, record: ModelRecord) -> int:
        return get_loader(record.spec.loader)().estimate_vram(record.spec)

    def _spawn_worker(self, record: ModelRecord) -> None:
        assert record.lease is not None
        record.new_generation()
        gpu = record.lease.gpu
        env = {
            "CUDA_VISIBLE_DEVICES": "" if gpu in self._simulated else str(gpu),
            "MLSUP_LEASED_MB": str(record.lease.vram_mb),
            "MLSUP_MODEL": record.id,
        }
        endpoint = f"ipc://{self.paths.worker_socket(record.id, record.generation)}"
        config = {
            "model": record.spec.to_dict(),
            "generation": record.generation,
            "token": record.token,
            "endpoint": endpoint,
            "control": self._server.endpoint,
            "supervisor_pid": os.getpid(),
            "log": str(self.paths.worker_log(record.id)),
            "env": env,
            "heartbeat_s": self.settings.heartbeat_s,
        }
        worker = WorkerProcess(self._context, run_worker, config)
        record.mark("spawned")
        worker.start()
        record.worker = worker
        self._save_state()
        self.log(
            f"{record.id}: started worker pid {worker.pid} on GPU {gpu} ({record.lease.vram_mb} MB)"
        )
        self._spawn_task(self._watch(record, worker))

    async def _watch(self, record: ModelRecord, worker: WorkerProcess) -> None:
        """React the moment a worker ends (its sentinel, not polling)."""
        code = await worker.wait()
        assert code is not None
        worker.close()
        if record.worker is not worker:
            return
        record.mark("exited")
        record.worker = None
        record.endpoint = None
        record.exit_code = code
        self._save_state()
        if record.state is ModelState.DRAINING:
            return  # drain() is waiting for this
        self.log(f"{record.id}: worker pid {worker.pid} {record.last_exit}")
        await record.fire(Event.WORKER_EXITED)
        record.task = self._spawn_task(self._recover(record, code))

    async def _recover(self, record: ModelRecord, code: int) -> None:
        """BACKOFF: respawn after a delay, re-leasing more memory after an OOM; or give up."""
        if code == EXIT_LOAD_ERROR:
            # The files or the runtime are wrong: respawning cannot help.
            await self._give_up(record, record.error or ModelLoadError("the loader failed"))
            return
        if code == EXIT_OOM or record.oom_reported:
            grown = int(max(record.estimate_mb or 0, record.memory_mb or 0) * OOM_GROWTH) + 1
            self.log(
                f"{record.id}: out of memory; re-leasing {grown} MB (was {record.estimate_mb})"
            )
            record.estimate_mb = grown
            await self._release(record)
        decision = record.policy.crashed(time.monotonic())
        if decision.give_up:
            failure = ModelFailed(
                f"model {record.id!r} crashed {decision.crashes} times within "
                f"{record.policy.window_s:g} s (last: {record.last_exit}); fix it, then "
                f"`mlsup load {record.id}` to try again (see `mlsup logs {record.id}`)",
                model=record.id,
                crashes=decision.crashes,
                last_exit=record.last_exit,
            )
            await self._give_up(record, failure)
            return
        record.restarts += 1
        record.stage = f"respawning in {decision.delay_s:g} s"
        await asyncio.sleep(decision.delay_s)
        await record.fire(Event.BACKOFF_ELAPSED)
        await self._bring_up(record)

    async def _give_up(self, record: ModelRecord, error: MlsupError) -> None:
        record.error = error
        record.reason = str(error)
        self.log(f"{record.id}: FAILED: {error}")
        await self._release(record)
        await record.fire(Event.GAVE_UP)

    # -- bringing models down -------------------------------------------------------------------

    async def drain(self, record: ModelRecord, reason: str, grace: float | None = None) -> None:
        """Stop the model's worker (SIGTERM, grace, SIGKILL) and release its lease."""
        if record.state is ModelState.DRAINING:
            await self._wait_for(
                record, lambda: record.state is not ModelState.DRAINING, float("inf")
            )
            return
        if record.state in (ModelState.UNLOADED, ModelState.FAILED):
            return
        await record.fire(Event.DRAIN)
        record.reason = reason
        task, record.task = record.task, None
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, MlsupError):
                await task
        worker = record.worker
        if worker is not None:
            grace = self.settings.terminate_grace_s if grace is None else grace
            code = await worker.terminate(grace)
            record.exit_code = code
            record.worker = None
            self._save_state()
        record.endpoint = None
        await self._release(record)
        self.log(f"{record.id}: unloaded ({reason})")
        record.mark("unloaded")
        await record.fire(Event.DRAINED)

    async def _release(self, record: ModelRecord) -> None:
        lease, record.lease = record.lease, None
        if lease is not None and self._boss is not None:
            with contextlib.suppress(LeaseError, TransportError):
                await self._boss.release(lease)

    def _preempted(self, record: ModelRecord, request: PreemptionRequest) -> None:
        grace = max(0.0, min(self.settings.terminate_grace_s, request.remaining_s - 0.2))
        record.error = Preempted(
            f"model {record.id!r} gave its VRAM to a higher-priority request; it reloads when "
            "asked again",
            model=record.id,
        )
        self.log(
            f"{record.id}: preempted by {request.requester}; {request.remaining_s:.1f} s to yield"
        )
        self._spawn_task(self.drain(record, "preempted", grace))

    async def _housekeeping(self) -> None:
        """Idle unloading, lost leases and stalled loads, once a second."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for record in list(self.models.values()):
                if record.lease is not None and record.lease.lost is not None:
                    record.error = record.lease.lost
                    await self.drain(record, f"lease lost: {record.lease.lost}")
                elif (
                    record.state is ModelState.READY
                    and record.spec.idle_timeout_s > 0
                    and now - record.last_activity > record.spec.idle_timeout_s
                ):
                    await self.drain(record, f"idle for {record.spec.idle_timeout_s:g} s")
                elif (
                    record.state is ModelState.STARTING
                    and record.worker is not None
                    and now - record.progress_at > self.settings.load_stall_timeout_s
                ):
                    stall = self.settings.load_stall_timeout_s
                    self.log(f"{record.id}: no load progress for {stall:g} s")
                    record.worker.kill()

    def _save_state(self) -> None:
        workers = [
            WorkerRecord(r.id, r.worker.pid, r.worker.start_token)
            for r in self.models.values()
            if r.worker is not None
        ]
        write_state(self.paths, workers)

    def _spawn_task(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # A bug in the supervisor: say so loudly, keep serving the other models.
            exc = task.exception()
            self.log(f"internal error in {task.get_coro()!r}: {exc!r}")
