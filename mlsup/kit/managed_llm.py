"""``EmbeddedLLMLoader``: llama.cpp models embedded in a feature's process, under a lease.

The seo runner of the seed document: a managed loader whose loading is
:class:`~mlsup.kit.loaders.ValidatedLlamaLoader`'s (check free VRAM first, fall back to fewer
GPU layers, then the CPU, on OOM), with the plan bounded by the lease: a model never plans to
offload more than the VRAM it leased, even when the GPU has more free.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mlsup.kit.leases import GPUBoss, GPULease
from mlsup.kit.loaders import ModelLoader, ValidatedLlamaLoader
from mlsup.kit.loaders.validated_llama import nvml_free_mb
from mlsup.kit.managed import ManagedModelLoader
from mlsup.kit.manifest import Manifest

__all__ = ["EmbeddedLLMLoader", "LeaseBudget"]


class LeaseBudget:
    """Free VRAM as a validated loader should see it: the GPU's free memory, capped by the
    lease (None, no GPU, stays None: the loader then plans for the CPU)."""

    def __init__(self, free_vram: Callable[[], int | None] = nvml_free_mb) -> None:
        self._free_vram = free_vram
        self.lease: GPULease | None = None

    def __call__(self) -> int | None:
        free = self._free_vram()
        if free is None or self.lease is None:
            return free
        return min(free, self.lease.vram_mb)


class EmbeddedLLMLoader(ManagedModelLoader):
    """A managed llama.cpp loader with validated, progressive-fallback loading.

    ``await EmbeddedLLMLoader(boss).load("seo-llm")`` loads a manifest model (any GGUF loader
    name) with :class:`ValidatedLlamaLoader`; paths work too, with ``model_id``. Each loaded
    model's ``model.loader.load_report`` says which offload it chose and what it tried before.
    """

    def __init__(
        self,
        boss: GPUBoss,
        *,
        manifest: Manifest | str | Path | None = None,
        free_vram: Callable[[], int | None] = nvml_free_mb,
    ) -> None:
        super().__init__(boss, ValidatedLlamaLoader(), manifest=manifest)
        self._free_vram = free_vram

    def _new_loader(self, source: object) -> ModelLoader:
        return ValidatedLlamaLoader(free_vram=LeaseBudget(self._free_vram))

    def _prepare(self, loader: ModelLoader, lease: GPULease) -> None:
        assert isinstance(loader, ValidatedLlamaLoader)
        budget = loader.free_vram
        if isinstance(budget, LeaseBudget):
            budget.lease = lease
