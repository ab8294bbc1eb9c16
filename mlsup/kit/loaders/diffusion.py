"""diffusers text-to-image pipelines, with memory savers that double as OOM fallbacks."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mlsup.errors import ModelLoadError, ModelOOM
from mlsup.kit.loaders.base import ModelLoader, backend_errors, free_torch_memory, import_runtime
from mlsup.kit.loaders.torch_common import estimate_torch_mb, resolve_device, resolve_dtype

__all__ = ["MEMORY_SAVERS", "DiffusersLoader", "DiffusionModel"]

#: The memory savers, mildest first: each OOM enables the next one and retries.
MEMORY_SAVERS = ("attention_slicing", "cpu_offload")


class DiffusionModel:
    """A loaded text-to-image pipeline; images are uint8 numpy arrays ``(height, width, 3)``."""

    def __init__(self, pipeline: Any, path: Path, device: str, savers: set[str]) -> None:
        self._pipeline = pipeline
        self.path = path
        self.device = device
        self.savers = savers

    def generate_image(
        self,
        prompt: str,
        *,
        steps: int = 20,
        guidance: float = 7.5,
        seed: int | None = None,
        width: int | None = None,
        height: int | None = None,
        negative_prompt: str | None = None,
    ) -> np.ndarray:
        """Render ``prompt``; the same ``seed`` gives the same image.

        On a CUDA OOM, the next memory saver of :data:`MEMORY_SAVERS` is enabled and the image
        is tried again; :attr:`savers` records which are on.
        """
        while True:
            try:
                with backend_errors(self.path):
                    return self._render(
                        prompt,
                        negative_prompt=negative_prompt,
                        num_inference_steps=int(steps),
                        guidance_scale=float(guidance),
                        seed=seed,
                        width=width,
                        height=height,
                    )
            except ModelOOM:
                if not self.device.startswith("cuda") or not self._enable_next_saver():
                    raise
                free_torch_memory()

    def _render(self, prompt: str, *, seed: int | None, **call: Any) -> np.ndarray:
        import torch

        generator = None
        if seed is not None:
            # A CPU generator gives the same noise on any device: results do not depend on it.
            generator = torch.Generator("cpu").manual_seed(int(seed))
        result = self._pipeline(prompt=prompt, generator=generator, output_type="np", **call)
        image = np.asarray(result.images[0], dtype=np.float32)
        return np.ascontiguousarray((image.clip(0.0, 1.0) * 255).round().astype(np.uint8))

    def _enable_next_saver(self) -> bool:
        for saver in MEMORY_SAVERS:
            if saver not in self.savers:
                apply_saver(self._pipeline, saver, self.device)
                self.savers.add(saver)
                return True
        return False

    def close(self) -> None:
        """Drop the pipeline so that the loader can free its memory."""
        self._pipeline = None


def apply_saver(pipeline: Any, saver: str, device: str) -> None:
    """Enable one memory saver on a pipeline (``attention_slicing`` or ``cpu_offload``)."""
    if saver == "attention_slicing":
        pipeline.enable_attention_slicing()
    elif saver == "cpu_offload":
        # Offloading moves submodules to the GPU only while they run; CPU-only: nothing to do.
        if device.startswith("cuda"):
            pipeline.enable_model_cpu_offload()
    else:
        raise ModelLoadError(f"unknown memory saver {saver!r}; use one of {MEMORY_SAVERS}")


class DiffusersLoader(ModelLoader):
    """Loads a diffusers pipeline directory (``model_index.json`` and its components).

    Options: ``dtype``, ``device`` (as :class:`~mlsup.kit.loaders.hf.HFModelLoader`),
    ``attention_slicing`` and ``cpu_offload`` (booleans, off by default: they trade speed for
    memory). Loading onto a GPU that runs out of memory retries with CPU offload.
    """

    name = "diffusers"
    extra = "diffusers"

    def _estimate_mb(self, path: Path, options: Mapping[str, Any]) -> float:
        return estimate_torch_mb(path, dtype=str(options.get("dtype", "auto")))

    def _load(self, path: Path, options: Mapping[str, Any]) -> DiffusionModel:
        if not (path / "model_index.json").is_file():
            raise ModelLoadError(
                f"{path} is not a diffusers pipeline (no model_index.json)", path=str(path)
            )
        torch = import_runtime("torch", self.extra)
        diffusers = import_runtime("diffusers", self.extra)
        device = resolve_device(str(options.get("device", "auto")), torch)
        dtype = resolve_dtype(str(options.get("dtype", "auto")), device, torch)
        pipeline = diffusers.DiffusionPipeline.from_pretrained(
            path, dtype=dtype, local_files_only=True
        )
        pipeline.set_progress_bar_config(disable=True)
        savers = {s for s in MEMORY_SAVERS if options.get(s)}
        for saver in MEMORY_SAVERS:
            if saver in savers:
                apply_saver(pipeline, saver, device)
        if "cpu_offload" not in savers or not device.startswith("cuda"):
            try:
                with backend_errors(path):
                    pipeline.to(device)
            except ModelOOM:
                if not device.startswith("cuda"):
                    raise
                free_torch_memory()
                apply_saver(pipeline, "cpu_offload", device)
                savers.add("cpu_offload")
        return DiffusionModel(pipeline, path, device, savers)
