"""Managed loaders: a model loader plus a VRAM lease, as in the original "model-boss" recipe.

::

    loader = ManagedModelLoader(boss=boss)                # models from the manifest (MLSUP_CONFIG)
    model = await loader.load(model_id="my-model", vram_mb=8000, priority=Priority.NORMAL)
    text = await model.chat(messages)                     # in a worker thread
    await model.unload()                                  # or: await loader.unload_all()

    loader = ManagedModelLoader(boss, GGUFModelLoader())  # or HFManagedLoader(boss), ...
    model = await loader.load(path, model_id="m", vram_mb=8000)

The lease is acquired before the model loads and released after it unloads; a load that fails
(missing file, :class:`ModelOOM`, cancellation) releases it too. A load inside ``async with
boss.acquire(...)`` held by the same task uses that lease instead, and leaves releasing it to
the block. When the lease is asked to yield (preemption) or found lost, the model is unloaded
and the lease released; the model object the caller still holds then raises
:class:`Preempted` or :class:`LeaseLost`. An unload waits for the calls running on the model.

Loading and unloading run in a worker thread, so that the event loop (and with it the lease's
renewal) keeps running while weights are read.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from mlsup import defaults
from mlsup.errors import ConfigError, LeaseLost, MlsupError, ModelError, ModelNotFound, Preempted
from mlsup.kit.leases import GPUBoss, GPULease, PreemptionRequest, Priority
from mlsup.kit.leases.acquire import scope_lease
from mlsup.kit.loaders import DiffusersLoader, HFModelLoader, ModelLoader, get_loader
from mlsup.kit.managed_model import ManagedModel, ManagedModelState, in_thread
from mlsup.kit.manifest import CONFIG_ENV, Manifest, ModelSpec, load_manifest

__all__ = [
    "DiffusersManagedLoader",
    "HFManagedLoader",
    "ManagedModel",
    "ManagedModelLoader",
    "ManagedModelState",
]

_log = logging.getLogger(__name__)

#: A loaded model's key: its id, and the scope lease it was loaded under (None: its own).
_Key = tuple[str, str | None]


class ManagedModelLoader:
    """Loads models under VRAM leases of ``boss``, one lease per model id.

    Without ``loader``, models are named by id and found in the manifest (``manifest``, a path
    or :class:`Manifest`; default ``$MLSUP_CONFIG``, the file the supervisor reads), which gives
    each its loader, path, options, VRAM and priority. With ``loader`` (a template: every model
    id gets its own copy), models are loaded by path, or by a manifest id with this loader.
    Use it on the boss's event loop; concurrent loads of one id share one load (the first
    caller's arguments win) and return the same :class:`ManagedModel`.
    """

    def __init__(
        self,
        boss: GPUBoss,
        loader: ModelLoader | None = None,
        *,
        manifest: Manifest | str | Path | None = None,
    ) -> None:
        self.boss = boss
        self._template = loader
        self._manifest = manifest
        self._models: dict[_Key, ManagedModel] = {}
        self._loading: dict[_Key, asyncio.Future[ManagedModel]] = {}
        self._background = _OwnedTasks()

    @property
    def models(self) -> dict[str, ManagedModel]:
        """The models loaded now, by id."""
        return {model_id: m for (model_id, _), m in self._models.items()}

    @property
    def manifest(self) -> Manifest:
        """The manifest models are resolved in (read on first use)."""
        if not isinstance(self._manifest, Manifest):
            path = self._manifest or os.environ.get(CONFIG_ENV)
            if not path:
                raise ConfigError(
                    f"no manifest to find models in: set {CONFIG_ENV} to the mlsup.toml that "
                    "declares them, pass ManagedModelLoader(boss, manifest=PATH), or give a "
                    "loader (ManagedModelLoader(boss, GGUFModelLoader())) and load by path"
                )
            self._manifest = load_manifest(path)
        return self._manifest

    def get(self, model_id: str) -> ManagedModel:
        """The loaded model ``model_id``; :class:`ModelNotFound` if this loader has none."""
        found = self.models.get(model_id)
        if found is None:
            raise ModelNotFound(
                f"model {model_id!r} is not loaded by this managed loader; load it first",
                model=model_id,
            )
        return found

    async def load(
        self,
        model: ModelSpec | str | Path | None = None,
        *,
        model_id: str | None = None,
        vram_mb: int | None = None,
        priority: Priority | str | None = None,
        gpu: int | None = None,
        timeout: float = defaults.LEASE_ACQUIRE_TIMEOUT_S,
        **options: Any,
    ) -> ManagedModel:
        """Lease VRAM for the model, then load it; returns the loaded model.

        ``model`` is a manifest id (``load("my-model")``), a :class:`ModelSpec`, or, with a
        loader, a path (then ``model_id`` is required). ``vram_mb`` and ``priority`` default to
        the manifest's, else the loader's estimate and NORMAL. Lease errors
        (:class:`LeaseTimeout`, :class:`CapacityExceeded`) and load errors
        (:class:`ModelLoadError`, :class:`ModelOOM`, :class:`ModelNotFound` naming the
        manifest) propagate; whatever failed, no lease is left behind. A model loaded already
        is returned as it is. Inside ``async with boss.acquire(...)`` of the same task, the
        model loads under that block's lease (its own copy, even when it is also loaded
        outside the block) and its unload leaves the lease to the block.
        """
        model_id, source = self._resolve(model, model_id)
        scope = scope_lease(self.boss)
        key: _Key = (model_id, scope.id if scope else None)
        loaded = self._models.get(key)
        if loaded is not None:
            return loaded
        pending = self._loading.get(key)
        if pending is None:
            if priority is None:
                priority = source.priority if isinstance(source, ModelSpec) else Priority.NORMAL
            pending = asyncio.ensure_future(
                self._load(
                    key,
                    source,
                    scope=scope,
                    vram_mb=vram_mb,
                    priority=priority,
                    gpu=gpu,
                    timeout=timeout,
                    options=options,
                )
            )
            self._loading[key] = pending
            pending.add_done_callback(lambda _: self._loading.pop(key, None))
        # Shielded: one caller giving up does not cancel the load the others wait for.
        return await asyncio.shield(pending)

    def _resolve(
        self, model: ModelSpec | str | Path | None, model_id: str | None
    ) -> tuple[str, ModelSpec | str | Path]:
        """The model's id, and what to load: a spec from the manifest, or a path.

        A bare name (``load("my-model")``, ``load(model_id="my-model")``) is a manifest id; a
        path needs a loader of this managed loader's own and an explicit ``model_id``.
        """
        if isinstance(model, ModelSpec):
            return model_id or model.id, model
        if model is None or model_id is None:
            if isinstance(model, Path):
                raise ValueError(f"model_id is required to load {model} by path")
            name = model_id if model is None else model
            if not name:
                raise ValueError("name the model: load('my-model') or load(model_id='my-model')")
            return name, self.manifest.model(name)
        if self._template is None:
            raise ConfigError(
                f"this managed loader has no loader of its own, so it cannot load {model!r} "
                f"as {model_id!r}: name a model of the manifest, or give "
                "ManagedModelLoader(boss, loader) to load files by path",
                model=model_id,
            )
        return model_id, model

    def _new_loader(self, source: ModelSpec | str | Path) -> ModelLoader:
        if self._template is None:
            assert isinstance(source, ModelSpec)  # _resolve gives specs without a template
            return get_loader(source.loader)()
        loader = copy.copy(self._template)
        loader.model, loader.path = None, None
        return loader

    def _prepare(self, loader: ModelLoader, lease: GPULease) -> None:
        """Adapt ``loader`` to the granted lease before it loads (subclasses)."""

    async def _load(
        self,
        key: _Key,
        source: ModelSpec | str | Path,
        *,
        scope: GPULease | None,
        vram_mb: int | None,
        priority: Priority | str,
        gpu: int | None,
        timeout: float,
        options: dict[str, Any],
    ) -> ManagedModel:
        model_id = key[0]
        loader = self._new_loader(source)
        if scope is not None:
            lease = scope
        else:
            if vram_mb is None:
                vram_mb = await in_thread(loader.estimate_vram, source, **options)
            lease = await self.boss.acquire(vram_mb, model_id, priority, gpu, timeout)
        try:
            self._prepare(loader, lease)
            await in_thread(loader.load, source, **options)
            lease.check()  # lost while loading: do not hand out a model without VRAM
        except BaseException:
            await in_thread(loader.unload)
            if scope is None:
                await asyncio.shield(self.boss.release(lease))
            raise
        managed = ManagedModel(
            model_id, lease, loader, owns_lease=scope is None, unload=self._unload_model
        )
        self._models[key] = managed
        lease.on_preempt(lambda request: self._spawn(self._preempted(managed, request)))
        lease.on_lost(lambda error: self._spawn(self._lost(managed, error)))
        return managed

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        # Lease callbacks run synchronously: the work becomes a task this loader owns.
        self._background.spawn(work)

    async def unload(self, model_id: str) -> None:
        """Unload ``model_id`` and release its lease; nothing happens if it is not loaded."""
        for key, managed in list(self._models.items()):
            if key[0] == model_id:
                await self._unload_model(managed)

    async def _unload_model(self, managed: ManagedModel) -> None:
        error = ModelError(
            f"model {managed.model_id!r} was unloaded; load it again to use it",
            model=managed.model_id,
        )
        await self._evict(managed, ManagedModelState.UNLOADED, error)

    async def unload_all(self) -> None:
        """Unload every model and release every lease (also the loads still in progress), and
        wait for the unloads that preemption or a lost lease started; raises if one failed."""
        for pending in list(self._loading.values()):
            try:
                await asyncio.shield(pending)
            except Exception:  # noqa: BLE001 - a failed load left nothing to unload
                continue
        for managed in list(self._models.values()):
            await self._unload_model(managed)
        await self._background.join()

    async def _preempted(self, managed: ManagedModel, request: PreemptionRequest) -> None:
        error = Preempted(
            f"model {managed.model_id!r} was unloaded to give GPU {request.gpu} to a "
            f"request of priority {request.priority.name if request.priority else '?'}; "
            "load it again to use it",
            model=managed.model_id,
            gpu=request.gpu,
            lease_id=managed.lease.id,
        )
        wait = max(0.0, request.remaining_s)
        # Yielding is the point: give the VRAM back even when an async-with block holds it.
        await self._evict(managed, ManagedModelState.PREEMPTED, error, wait, release=True)

    async def _lost(self, managed: ManagedModel, error: LeaseLost) -> None:
        await self._evict(managed, ManagedModelState.LOST, error)

    async def _evict(
        self,
        managed: ManagedModel,
        state: ManagedModelState,
        error: MlsupError,
        wait_s: float = defaults.MANAGED_UNLOAD_WAIT_S,
        *,
        release: bool | None = None,
    ) -> None:
        if not managed.retire(state, error):
            return  # another path is unloading it already
        for key, value in list(self._models.items()):
            if value is managed:
                del self._models[key]
        release = managed.owns_lease if release is None else release
        if not await managed.wait_idle(wait_s):
            _log.warning(
                "model %r: %d call(s) still running after %.1f s; it is unloaded, and its "
                "lease released, when they finish",
                managed.model_id,
                managed.calls_in_flight,
                wait_s,
            )
            self._spawn(self._free(managed, release))
            return
        await self._free(managed, release)

    async def _free(self, managed: ManagedModel, release: bool) -> None:
        await managed.wait_idle(None)
        try:
            await in_thread(managed.unload_weights)
        finally:
            # A lost lease is no longer ours to release.
            if release and managed.lease.lost is None:
                await asyncio.shield(self.boss.release(managed.lease))


class HFManagedLoader(ManagedModelLoader):
    """:class:`ManagedModelLoader` with a transformers loader (:class:`HFModelLoader`)."""

    def __init__(self, boss: GPUBoss, *, manifest: Manifest | str | Path | None = None) -> None:
        super().__init__(boss, HFModelLoader(), manifest=manifest)


class DiffusersManagedLoader(ManagedModelLoader):
    """:class:`ManagedModelLoader` with a diffusers loader (:class:`DiffusersLoader`)."""

    def __init__(self, boss: GPUBoss, *, manifest: Manifest | str | Path | None = None) -> None:
        super().__init__(boss, DiffusersLoader(), manifest=manifest)


class _OwnedTasks:
    """Background work of one loader: every task is kept until it ends, and its failure is
    kept until :meth:`join` raises it (nothing is only logged)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Future[None]] = set()
        self._errors: list[BaseException] = []

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            assert error is not None
            _log.error("background unload failed (raised by unload_all)", exc_info=error)
            self._errors.append(error)

    async def join(self) -> None:
        """Wait for every task (also those started meanwhile); raise the first failure."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        errors, self._errors = self._errors, []
        if errors:
            raise ModelError(
                f"{len(errors)} background unload(s) failed; the first: {errors[0]}"
            ) from errors[0]
