"""Session fixtures: the tiny real models, each built (or taken from the cache) on first use."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlsup.kit.loaders.validated_llama import nvml_free_mb
from mlsup.testing import tiny_models


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip the CUDA-only tests (marked ``gpu``) on machines without an NVIDIA GPU."""
    if nvml_free_mb() is not None:
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (NVML finds none)")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    return tiny_models.smollm2_gguf()


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    return tiny_models.minilm_dir()


@pytest.fixture(scope="session")
def causal_lm_path() -> Path:
    return tiny_models.tiny_causal_lm()


@pytest.fixture(scope="session")
def diffusion_path() -> Path:
    return tiny_models.tiny_diffusion()


@pytest.fixture(scope="session")
def whisper_path() -> Path:
    return tiny_models.tiny_whisper()


@pytest.fixture(scope="session")
def onnx_path() -> Path:
    return tiny_models.tiny_onnx()
