"""``GPUBoss``: VRAM leases for one process, on top of :class:`LeaseStore`.

Bad input raises before anything is written to Redis: :class:`InvalidArgument` (also a
``ValueError``) for a ``vram_mb`` that is not a positive integer,
:class:`CapacityExceeded` for a request larger than the GPU, :class:`DeviceError` for an
unknown GPU, :class:`LeaseNotHeld` for a lease this token never held. A wait that runs out
raises :class:`LeaseTimeout` after leaving the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any

from mlsup import defaults
from mlsup.errors import (
    CapacityExceeded,
    DeviceError,
    LeaseNotHeld,
    LeaseTimeout,
    TransportError,
    UsageError,
)
from mlsup.kit.devices import Device, cpu_budget_devices, inventory
from mlsup.kit.leases.acquire import AcquireCall
from mlsup.kit.leases.lease import GPULease
from mlsup.kit.leases.owner import HolderIdentity, OwnerIdentity, encode_users
from mlsup.kit.leases.policy import best_fit
from mlsup.kit.leases.preemption import PreemptionManager
from mlsup.kit.leases.priority import Priority
from mlsup.kit.leases.push import PreemptPush, PushedPreempt
from mlsup.kit.leases.renewal import Renewer
from mlsup.kit.leases.request_check import check_request
from mlsup.kit.leases.results import AdmitOutcome, LeaseRequest, RenewOutcome
from mlsup.kit.leases.snapshot import GpuSnapshot, gpu_snapshot
from mlsup.kit.leases.store import LeaseStore
from mlsup.kit.leases.timing import LeaseTiming
from mlsup.kit.leases.workstation import boss_defaults
from mlsup.kit.redis_url import resolve_redis_url
from mlsup.process_identity import ProcessIdentity, same_process

__all__ = ["AcquireCall", "GPUBoss"]  # AcquireCall: re-exported from .acquire


class GPUBoss:
    """VRAM leases on the GPUs shared through one Redis.

    ``GPUBoss()`` with no arguments works on a workstation: what is left out comes from the
    ``mlsup.toml`` named by ``$MLSUP_CONFIG`` (its ``[redis]`` url and prefix, its
    ``[[devices]]``), as the supervisor reads it. ``redis_url`` left out: that file's, else
    ``$MLSUP_REDIS_URL``, else the URL a running supervisor published, else
    :class:`ConfigError`. ``prefix`` namespaces every key. ``devices`` (``[[devices]]`` tables
    or :class:`Device` values) publishes their capacities; without them, NVML GPUs are
    published, else the capacities already in Redis are used, else the supervisor's CPU-only
    rule (device 0, a share of host memory). ``timing`` shortens TTLs and grace periods
    (tests); ``host`` overrides the hostname recorded as the owner's.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        prefix: str | None = None,
        devices: Iterable[Mapping[str, Any] | Device] | None = None,
        *,
        timing: LeaseTiming | None = None,
        host: str | None = None,
    ) -> None:
        settings = boss_defaults(redis_url, prefix, devices)
        self._url = settings.redis_url
        self.prefix = settings.prefix
        self._devices = settings.devices
        self.timing = timing or LeaseTiming()
        self.owner = OwnerIdentity.current(host)
        self.preemption = PreemptionManager()
        self.capacities: dict[int, int] = {}
        self._store: LeaseStore | None = None
        self._held: dict[str, GPULease] = {}
        self._renewer: Renewer | None = None
        self.push: PreemptPush | None = None

    @property
    def store(self) -> LeaseStore:
        """The Redis I/O; raises if :meth:`connect` was not called."""
        if self._store is None:
            raise UsageError("GPUBoss is not connected: await boss.connect() first")
        return self._store

    @property
    def held(self) -> list[GPULease]:
        """The leases this boss holds now."""
        return list(self._held.values())

    async def connect(self) -> None:
        """Connect to Redis, publish or read the GPU capacities, start renewing. Idempotent:
        a connected boss returns at once."""
        if self._store is not None:
            return
        store = LeaseStore(resolve_redis_url(self._url), self.prefix, self.timing)
        push = PreemptPush(store.client, store.keys.push(self.owner.label), self._pushed)
        try:
            run_id, uptime = await store.info()
            local = inventory(self._devices)
            for device in local:
                self.capacities[device.index] = await self._publish(store, device, uptime)
            if self._devices is None:
                for index, capacity in (await store.published_gpus()).items():
                    self.capacities.setdefault(index, capacity)
            if not self.capacities:  # no GPU, nothing configured or published: the CPU rule
                for device in inventory(cpu_budget_devices()):
                    self.capacities[device.index] = await self._publish(store, device, uptime)
            # Subscribed before any grant, so that no request to yield one of ours is missed.
            await push.start()
        except BaseException:
            await push.stop()
            await store.close()
            raise
        self.push = push
        self._store = store
        self._renewer = Renewer(self, run_id)
        self._renewer.start()

    def _pushed(self, pushed: PushedPreempt) -> None:
        lease_id, notice = pushed
        lease = self._held.get(lease_id)
        if lease is not None:  # another boss of this process holds it, or it is gone
            self.preemption.notice(lease, notice)

    async def _publish(self, store: LeaseStore, device: Device, uptime_s: int) -> int:
        capacity = await store.publish_capacity(device.index, device.capacity_mb, uptime_s)
        if capacity != device.capacity_mb:
            raise DeviceError(
                f"GPU {device.index} is published with {capacity} MB but configured here with "
                f"{device.capacity_mb} MB; give every process the same [[devices]], or delete "
                f"{store.keys.capacity(device.index)} when no lease is held",
                gpu=device.index,
            )
        return capacity

    async def republish(self, gpu: int) -> None:
        """Publish a capacity Redis lost (restart without persistence) from what we know."""
        if gpu not in self.capacities:
            raise DeviceError(f"GPU {gpu} is no longer published in Redis", gpu=gpu)
        _, uptime = await self.store.info()
        await self.store.publish_capacity(gpu, self.capacities[gpu], uptime)

    async def close(self) -> None:
        """Stop renewing, release every lease still held, close the connections."""
        if self._renewer is not None:
            await self._renewer.stop()
            self._renewer = None
        if self.push is not None:
            await self.push.stop()
            self.push = None
        for lease in list(self._held.values()):
            with contextlib.suppress(TransportError, LeaseNotHeld):
                await self.release(lease)
        await self.preemption.aclose()
        if self._store is not None:
            await self._store.close()
            self._store = None

    async def __aenter__(self) -> GPUBoss:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def acquire(
        self,
        vram_mb: int,
        model_id: str,
        priority: Priority | str = Priority.NORMAL,
        gpu: int | None = None,
        timeout: float = defaults.LEASE_ACQUIRE_TIMEOUT_S,
    ) -> AcquireCall:
        """Lease ``vram_mb`` MB for ``model_id``: ``await`` it, or ``async with`` it.

        ``gpu=None`` picks the best fit. Waits in the GPU's fair queue up to ``timeout``
        seconds (woken on release, not polling); a higher ``priority`` asks lower ones to yield.
        """
        return AcquireCall(
            self, vram_mb=vram_mb, model_id=model_id, priority=priority, gpu=gpu, timeout=timeout
        )

    async def _choose_gpu(self, vram_mb: int, priority: Priority) -> int:
        if len(self.capacities) == 1:
            return next(iter(self.capacities))
        views = [(await self.snapshot_gpu(i)).view() for i in sorted(self.capacities)]
        choice = best_fit(views, vram_mb, int(priority))
        assert choice is not None  # check_request ruled out "fits nowhere"
        return choice

    async def _acquire(
        self, vram_mb: int, model_id: str, priority: Priority | str, gpu: int | None, timeout: float
    ) -> GPULease:
        priority = Priority.parse(priority)
        await self.connect()
        check_request(self.capacities, vram_mb, model_id, gpu)
        if gpu is None:
            gpu = await self._choose_gpu(vram_mb, priority)
        secret = secrets.token_hex(24)  # one read of the system's randomness: id, then token
        req = self.lease_request(
            secret[:16],
            secret[16:],
            gpu=gpu,
            vram_mb=vram_mb,
            priority=priority,
            model_id=model_id,
        )
        deadline = time.monotonic() + timeout
        queued = False
        try:
            while True:
                try:
                    result = await self.store.admit(req)
                except TransportError:
                    if time.monotonic() >= deadline:
                        raise
                    await asyncio.sleep(defaults.LEASE_TRANSPORT_RETRY_S)
                    continue
                if result.outcome is AdmitOutcome.GRANTED:
                    queued = False
                    return self._granted(req, result.epoch)
                if result.outcome is AdmitOutcome.NO_GPU:
                    await self.republish(gpu)
                    continue
                if result.outcome is AdmitOutcome.TOO_BIG:
                    raise CapacityExceeded(
                        f"{vram_mb} MB for model {model_id!r} exceeds GPU {gpu}'s capacity "
                        f"({result.capacity_mb} MB)",
                        gpu=gpu,
                        model=model_id,
                    )
                queued = True
                if await self._reap_dead(result.local_holders):
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LeaseTimeout(
                        f"no {vram_mb} MB for model {model_id!r} on GPU {gpu} within "
                        f"{timeout:g} s; raise the timeout or the priority, or free VRAM",
                        gpu=gpu,
                        model=model_id,
                        lease_id=req.id,
                    )
                retry = result.retry_ms / 1000 if result.retry_ms >= 0 else math.inf
                wait = min(remaining, self.timing.waiter_ttl_s / 2, retry)
                with contextlib.suppress(TransportError):
                    await self.store.wait_wake(req.id, wait)
        finally:
            if queued:
                # Leave the queue whatever ended the wait (timeout, cancellation, error).
                with contextlib.suppress(TransportError):
                    await asyncio.shield(self.store.leave(gpu, req.id))

    def lease_request(
        self,
        lease_id: str,
        token: str,
        *,
        gpu: int,
        vram_mb: int,
        priority: Priority,
        model_id: str,
        users: str = "",
    ) -> LeaseRequest:
        """What admission records for a lease owned by this process."""
        owner = self.owner
        return LeaseRequest(
            lease_id, token, gpu, vram_mb, priority, model_id,
            owner.label, owner.pid, owner.host, owner.start, users,
        )  # fmt: skip

    def _granted(self, req: LeaseRequest, epoch: int) -> GPULease:
        lease = GPULease(
            id=req.id,
            token=req.token,
            gpu=req.gpu,
            vram_mb=req.vram_mb,
            priority=req.priority,
            model_id=req.model_id,
            epoch=epoch,
            manager=self.preemption,
        )
        self._held[lease.id] = lease
        return lease

    async def _reap_dead(self, holders: Iterable[HolderIdentity]) -> bool:
        """Reap this host's leases whose owner and users are all dead; True if any was."""
        reaped = False
        for holder in holders:
            if holder.dead(same_process):
                reaped |= await self.store.reap(holder)
        return reaped

    def _not_held(self, lease: GPULease, action: str) -> LeaseNotHeld:
        return LeaseNotHeld(
            f"cannot {action} lease {lease.id}: this token never held it (unknown or forged "
            "lease, or one already released); acquire a lease first",
            lease_id=lease.id,
            gpu=lease.gpu,
            model=lease.model_id,
        )

    def _forget(self, lease: GPULease) -> None:
        self._held.pop(lease.id, None)
        self.preemption.forget(lease)

    async def release(self, lease: GPULease) -> None:
        """Give the lease's VRAM back. Releasing a lost or already released lease of ours does
        nothing (its VRAM is back already); a lease this token never held raises
        :class:`LeaseNotHeld`."""
        if lease.released:
            return
        result = await self.store.release(lease.id, lease.token)
        ours = self._held.get(lease.id) is lease
        if result.outcome is RenewOutcome.NOT_HELD and not ours:
            raise self._not_held(lease, "release")
        if result.outcome is RenewOutcome.LOST:
            lease.mark_lost(result.reason)
        lease.released = True
        self._forget(lease)

    async def set_users(self, lease: GPULease, users: Iterable[ProcessIdentity]) -> None:
        """Record the processes that use the lease's VRAM (replacing those recorded): while
        one of them runs, the lease is not reaped when this process dies. Raises
        :class:`LeaseLost` if the lease is gone, :class:`LeaseNotHeld` if not held."""
        users = tuple(users)
        result = await self.store.set_users(lease.id, lease.token, encode_users(users))
        if result.outcome is RenewOutcome.LOST:
            self._forget(lease)
            raise lease.mark_lost(result.reason)
        if result.outcome is RenewOutcome.NOT_HELD:
            raise self._not_held(lease, "record the users of")
        lease.users = users

    async def renew(self, lease: GPULease) -> None:
        """Renew now (the background task does it anyway). Raises :class:`LeaseLost` if the
        lease is gone and :class:`LeaseNotHeld` if it was never ours."""
        if lease.released or (lease.lost is None and self._held.get(lease.id) is not lease):
            raise self._not_held(lease, "renew")
        lease.check()
        assert self._renewer is not None
        await self._renewer.renew(lease)
        lease.check()

    async def resize(self, lease: GPULease, vram_mb: int) -> None:
        """Change the lease's size. Shrinking always succeeds; growing succeeds only if it fits
        now and nobody waits, else :class:`LeaseTimeout` (nothing changes; retry later)."""
        check_request(self.capacities, vram_mb, lease.model_id, lease.gpu)
        if lease.released:
            raise self._not_held(lease, "resize")
        lease.check()
        result = await self.store.resize(lease.id, lease.token, vram_mb)
        if result.outcome is RenewOutcome.OK:
            lease.vram_mb = vram_mb
        elif result.outcome is RenewOutcome.LOST:
            self._forget(lease)
            raise lease.mark_lost(result.reason)
        elif result.outcome is RenewOutcome.NOT_HELD:
            raise self._not_held(lease, "resize")
        else:
            raise LeaseTimeout(
                f"cannot grow lease {lease.id} to {vram_mb} MB now (free MB, waiters: "
                f"{result.reason}); retry later or acquire a second lease",
                lease_id=lease.id,
                gpu=lease.gpu,
                model=lease.model_id,
            )

    async def snapshot_gpu(self, gpu: int) -> GpuSnapshot:
        """One GPU's live leases and queue, after purging and reaping dead local owners."""
        listing = await self.store.sweep(gpu)
        local = [
            HolderIdentity(f["id"], int(f["pid"]), f["start"], f.get("users", ""))
            for f in listing[2]
            if f.get("host") == self.owner.host
        ]
        if await self._reap_dead(local):
            listing = await self.store.sweep(gpu)
        return gpu_snapshot(gpu, listing)

    async def snapshot(self) -> dict[int, GpuSnapshot]:
        """Every published GPU's leases (holder, pid, host, priority, MB, age, model)."""
        await self.connect()
        for index, capacity in (await self.store.published_gpus()).items():
            self.capacities.setdefault(index, capacity)
        return {gpu: await self.snapshot_gpu(gpu) for gpu in sorted(self.capacities)}

    def untrack(self, lease: GPULease) -> None:
        """Stop renewing a lost lease (used by the renewer)."""
        self._forget(lease)
