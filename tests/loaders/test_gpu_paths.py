"""CUDA-only paths of the loaders: they run where NVML finds a GPU, and are skipped elsewhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlsup.kit.loaders import DiffusersLoader, HFModelLoader, ValidatedLlamaLoader

pytestmark = pytest.mark.gpu


def test_hf_on_cuda_in_float16_within_its_estimate(causal_lm_path: Path) -> None:
    import torch

    loader = HFModelLoader()
    torch.cuda.reset_peak_memory_stats()
    model = loader.load(causal_lm_path)  # device and dtype "auto": cuda, float16
    assert model.device.startswith("cuda")
    text = model.generate("The quick brown", max_tokens=8)
    assert text == model.generate("The quick brown", max_tokens=8)
    peak_mb = torch.cuda.max_memory_allocated() / (1 << 20)
    assert peak_mb <= loader.estimate_vram(causal_lm_path)
    loader.unload()
    assert torch.cuda.memory_allocated() == 0


def test_validated_llama_offloads_every_layer(smollm2_path: Path) -> None:
    import llama_cpp

    loader = ValidatedLlamaLoader()
    try:
        loader.load(smollm2_path, n_ctx=512)
        report = loader.load_report
        assert report is not None and report.free_mb is not None
        expected = "cuda" if llama_cpp.llama_supports_gpu_offload() else "cpu"
        assert report.device == expected
    finally:
        loader.unload()


def test_diffusers_on_cuda_with_cpu_offload(diffusion_path: Path) -> None:
    on_gpu = DiffusersLoader().load(diffusion_path, dtype="float32")
    offloaded = DiffusersLoader().load(diffusion_path, dtype="float32", cpu_offload=True)
    assert offloaded.savers == {"cpu_offload"}
    args = {"steps": 2, "width": 32, "height": 32, "seed": 5}
    a, b = on_gpu.generate_image("a cube", **args), offloaded.generate_image("a cube", **args)
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    np.testing.assert_allclose(a.astype(int), b.astype(int), atol=2)
