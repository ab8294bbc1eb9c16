"""DiffusersLoader with a tiny Stable-Diffusion-shaped pipeline built from configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlsup.errors import ModelLoadError
from mlsup.kit.loaders import DiffusersLoader, DiffusionModel
from mlsup.kit.loaders.diffusion import apply_saver

ARGS = {"steps": 2, "guidance": 5.0, "width": 32, "height": 32}


@pytest.fixture(scope="module")
def pipe(diffusion_path: Path) -> DiffusionModel:
    model: DiffusionModel = DiffusersLoader().load(diffusion_path, device="cpu")
    return model


def test_image_shape_dtype_and_seed(pipe: DiffusionModel, diffusion_path: Path) -> None:
    image = pipe.generate_image("a red cube", seed=3, **ARGS)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert image.std() > 0  # not a blank image
    np.testing.assert_array_equal(pipe.generate_image("a red cube", seed=3, **ARGS), image)
    assert not np.array_equal(pipe.generate_image("a red cube", seed=4, **ARGS), image)
    other = DiffusersLoader()
    try:
        again = other.load(diffusion_path, device="cpu").generate_image(
            "a red cube", seed=3, **ARGS
        )
    finally:
        other.unload()
    np.testing.assert_array_equal(again, image)


def test_other_sizes(pipe: DiffusionModel) -> None:
    assert pipe.generate_image("x", seed=0, steps=1, width=48, height=16).shape == (16, 48, 3)


def test_memory_savers_give_the_same_image(diffusion_path: Path) -> None:
    plain = DiffusersLoader().load(diffusion_path, device="cpu")
    sliced = DiffusersLoader().load(diffusion_path, device="cpu", attention_slicing=True)
    assert sliced.savers == {"attention_slicing"} and plain.savers == set()
    np.testing.assert_allclose(
        sliced.generate_image("a cube", seed=1, **ARGS).astype(int),
        plain.generate_image("a cube", seed=1, **ARGS).astype(int),
        atol=1,
    )
    with pytest.raises(ModelLoadError, match="unknown memory saver"):
        apply_saver(None, "quantize", "cpu")


def test_estimate_counts_every_component(diffusion_path: Path) -> None:
    weights = sum(p.stat().st_size for p in diffusion_path.rglob("*.safetensors"))
    estimate = DiffusersLoader().estimate_vram(diffusion_path, dtype="float32")
    assert estimate >= weights / (1 << 20)
