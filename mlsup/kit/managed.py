"""Managed loaders: a model loader plus a VRAM lease, as in the original "model-boss" recipe.

::

    loader = ManagedModelLoader(boss, GGUFModelLoader())   # or HFManagedLoader(boss), ...
    model = await loader.load(path, model_id="m", vram_mb=8000, priority=Priority.NORMAL)
    model.chat(messages)
    await loader.unload("m")                              # or: await loader.unload_all()

The lease is acquired before the model loads and released after it unloads; a load that fails
(missing file, :class:`ModelOOM`, cancellation) releases it too. When the lease is asked to
yield (preemption) or found lost, the model is unloaded and the lease released; the model
object the caller still holds then raises :class:`Preempted` or :class:`LeaseLost`.

Loading and unloading run in a worker thread, so that the event loop (and with it the lease's
renewal) keeps running while weights are read.
"""

from __future__ import annotations

import asyncio
import copy
import enum
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from mlsup import defaults
from mlsup.errors import LeaseLost, MlsupError, ModelError, ModelNotFound, Preempted
from mlsup.kit.leases import GPUBoss, GPULease, PreemptionRequest, Priority
from mlsup.kit.loaders import DiffusersLoader, HFModelLoader, ModelLoader

if TYPE_CHECKING:
    from mlsup.kit.manifest import ModelSpec

__all__ = [
    "DiffusersManagedLoader",
    "HFManagedLoader",
    "ManagedModel",
    "ManagedModelLoader",
    "ModelState",
]

T = TypeVar("T")

_log = logging.getLogger(__name__)


class ModelState(enum.Enum):
    """Where a managed model is in its life."""

    LOADED = "loaded"
    UNLOADED = "unloaded"
    PREEMPTED = "preempted"
    LOST = "lost"


class ManagedModel:
    """A model loaded under a lease. Attribute access goes to the loaded model (``chat``,
    ``run``, ``generate_image``...) while it is loaded; afterwards it raises why it is gone:
    :class:`Preempted`, :class:`LeaseLost`, or :class:`ModelError` after an explicit unload.
    """

    def __init__(self, model_id: str, lease: GPULease, loader: ModelLoader) -> None:
        self.model_id = model_id
        self.lease = lease
        self.state = ModelState.LOADED
        self._loader = loader
        self._gone: MlsupError | None = None

    @property
    def loaded(self) -> bool:
        """Whether the model is loaded (and its lease held)."""
        return self.state is ModelState.LOADED

    @property
    def model(self) -> Any:
        """The loader's model object; raises why it is gone once unloaded."""
        if self._gone is not None:
            raise self._gone
        return self._loader.model

    def __getattr__(self, name: str) -> Any:
        # Only called for names this class lacks: the loaded model's operations.
        return getattr(self.model, name)

    def __repr__(self) -> str:
        return f"<ManagedModel {self.model_id!r} {self.state.value} lease={self.lease.id}>"


class ManagedModelLoader:
    """Loads models under VRAM leases of ``boss``, one lease per model id.

    ``loader`` is a template: a loader holds one model at a time, so every model id gets its
    own copy. Use it on the boss's event loop; concurrent loads of one id share one load (the
    first caller's path and options win) and return the same :class:`ManagedModel`.
    """

    def __init__(self, boss: GPUBoss, loader: ModelLoader) -> None:
        self.boss = boss
        self._template = loader
        self._models: dict[str, ManagedModel] = {}
        self._loading: dict[str, asyncio.Future[ManagedModel]] = {}
        self._evictions: set[asyncio.Task[None]] = set()

    @property
    def models(self) -> dict[str, ManagedModel]:
        """The models loaded now, by id."""
        return dict(self._models)

    def get(self, model_id: str) -> ManagedModel:
        """The loaded model ``model_id``; :class:`ModelNotFound` if this loader has none."""
        try:
            return self._models[model_id]
        except KeyError:
            raise ModelNotFound(
                f"model {model_id!r} is not loaded by this managed loader; load it first",
                model=model_id,
            ) from None

    async def load(
        self,
        path: ModelSpec | str | Path,
        *,
        model_id: str,
        vram_mb: int | None = None,
        priority: Priority | str = Priority.NORMAL,
        gpu: int | None = None,
        timeout: float = defaults.LEASE_ACQUIRE_TIMEOUT_S,
        **options: Any,
    ) -> ManagedModel:
        """Lease VRAM for ``model_id``, then load it; returns the loaded model.

        ``vram_mb=None`` leases the loader's estimate. Lease errors (:class:`LeaseTimeout`,
        :class:`CapacityExceeded`) and load errors (:class:`ModelLoadError`,
        :class:`ModelOOM`) propagate; whatever failed, no lease is left behind. A model id
        that is loaded already is returned as it is.
        """
        loaded = self._models.get(model_id)
        if loaded is not None:
            return loaded
        pending = self._loading.get(model_id)
        if pending is None:
            pending = asyncio.ensure_future(
                self._load(
                    path,
                    model_id=model_id,
                    vram_mb=vram_mb,
                    priority=priority,
                    gpu=gpu,
                    timeout=timeout,
                    options=options,
                )
            )
            self._loading[model_id] = pending
            pending.add_done_callback(lambda _: self._loading.pop(model_id, None))
        # Shielded: one caller giving up does not cancel the load the others wait for.
        return await asyncio.shield(pending)

    async def _load(
        self,
        path: ModelSpec | str | Path,
        *,
        model_id: str,
        vram_mb: int | None,
        priority: Priority | str,
        gpu: int | None,
        timeout: float,
        options: dict[str, Any],
    ) -> ManagedModel:
        loader = copy.copy(self._template)
        loader.model, loader.path = None, None
        if vram_mb is None:
            vram_mb = await _in_thread(loader.estimate_vram, path, **options)
        lease = await self.boss.acquire(vram_mb, model_id, priority, gpu, timeout)
        try:
            await _in_thread(loader.load, path, **options)
            lease.check()  # lost while loading: do not hand out a model without VRAM
        except BaseException:
            await _in_thread(loader.unload)
            await asyncio.shield(self.boss.release(lease))
            raise
        managed = ManagedModel(model_id, lease, loader)
        self._models[model_id] = managed
        lease.on_preempt(lambda request: self._preempted(managed, request))
        lease.on_lost(lambda error: self._lost(managed, error))
        return managed

    async def unload(self, model_id: str) -> None:
        """Unload ``model_id`` and release its lease; nothing happens if it is not loaded."""
        managed = self._models.get(model_id)
        if managed is not None:
            await self._evict(
                managed,
                ModelState.UNLOADED,
                ModelError(
                    f"model {model_id!r} was unloaded; load it again to use it", model=model_id
                ),
            )

    async def unload_all(self) -> None:
        """Unload every model and release every lease (also the loads still in progress), and
        wait for the unloads that a lost lease started."""
        for pending in list(self._loading.values()):
            try:
                await asyncio.shield(pending)
            except Exception:  # noqa: BLE001 - a failed load left nothing to unload
                continue
        for model_id in list(self._models):
            await self.unload(model_id)
        # Their failures are logged by _evicted.
        await asyncio.gather(*self._evictions, return_exceptions=True)

    async def _preempted(self, managed: ManagedModel, request: PreemptionRequest) -> None:
        error = Preempted(
            f"model {managed.model_id!r} was unloaded to give GPU {request.gpu} to a "
            f"request of priority {request.priority.name if request.priority else '?'}; "
            "load it again to use it",
            model=managed.model_id,
            gpu=request.gpu,
            lease_id=managed.lease.id,
        )
        await self._evict(managed, ModelState.PREEMPTED, error)

    def _lost(self, managed: ManagedModel, error: LeaseLost) -> None:
        # Called synchronously by the renewal task: unload in a task of our own.
        task = asyncio.ensure_future(self._evict(managed, ModelState.LOST, error))
        self._evictions.add(task)
        task.add_done_callback(self._evicted)

    def _evicted(self, task: asyncio.Task[None]) -> None:
        self._evictions.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.error("unloading a model whose lease was lost failed", exc_info=task.exception())

    async def _evict(self, managed: ManagedModel, state: ModelState, error: MlsupError) -> None:
        if managed.state is not ModelState.LOADED:
            return  # another path is unloading it already
        managed.state, managed._gone = state, error
        if self._models.get(managed.model_id) is managed:
            del self._models[managed.model_id]
        try:
            await _in_thread(managed._loader.unload)
        finally:
            if managed.lease.lost is None:  # a lost lease is no longer ours to release
                await asyncio.shield(self.boss.release(managed.lease))


class HFManagedLoader(ManagedModelLoader):
    """:class:`ManagedModelLoader` with a transformers loader (:class:`HFModelLoader`)."""

    def __init__(self, boss: GPUBoss) -> None:
        super().__init__(boss, HFModelLoader())


class DiffusersManagedLoader(ManagedModelLoader):
    """:class:`ManagedModelLoader` with a diffusers loader (:class:`DiffusersLoader`)."""

    def __init__(self, boss: GPUBoss) -> None:
        super().__init__(boss, DiffusersLoader())


async def _in_thread(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking call in a thread. A thread cannot be stopped: on cancellation, wait for
    it to finish (so that what it loaded can be unloaded), then re-raise the cancellation."""
    done = asyncio.ensure_future(asyncio.to_thread(call, *args, **kwargs))
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        await asyncio.wait([done])
        raise
