"""ONNXLoader with a real graph exported from torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mlsup.errors import ModelLoadError
from mlsup.kit.idle import IdleResourceManager
from mlsup.kit.loaders import ONNXLoader
from mlsup.testing.tiny_models import tiny_mlp


def test_run_matches_the_torch_module(onnx_path: Path) -> None:
    loader = ONNXLoader()
    model = loader.load(onnx_path)
    assert model.input_names == ["x"] and model.output_names == ["y"]
    assert model.providers == ["CPUExecutionProvider"]
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    out = model.run({"x": x})
    assert set(out) == {"y"}
    assert out["y"].shape == (5, 3) and out["y"].dtype == np.float32
    with torch.no_grad():
        expected = tiny_mlp()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out["y"], expected, rtol=1e-5, atol=1e-6)
    loader.unload()
    assert not loader.loaded


def test_two_loads_give_identical_results(onnx_path: Path) -> None:
    x = np.ones((2, 4), np.float32)
    first = ONNXLoader().load(onnx_path).run({"x": x})["y"]
    second = ONNXLoader().load(onnx_path).run({"x": x})["y"]
    np.testing.assert_array_equal(first, second)


def test_estimate_is_the_file_plus_margin(onnx_path: Path) -> None:
    size_mb = onnx_path.stat().st_size / (1 << 20)
    assert ONNXLoader().estimate_vram(onnx_path) == max(1, int(np.ceil(size_mb * 1.2)))


def test_bad_inputs_and_corrupt_file(onnx_path: Path, tmp_path: Path) -> None:
    model = ONNXLoader().load(onnx_path)
    with pytest.raises(ModelLoadError, match="unknown inputs"):
        model.run({"z": np.ones((1, 4), np.float32)})
    with pytest.raises(ModelLoadError, match=r"x.*shape|dimension|Got invalid"):
        model.run({"x": np.ones((1, 5), np.float32)})
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(ModelLoadError) as info:
        ONNXLoader().load(corrupt)
    assert info.value.context["path"] == str(corrupt)


def test_idle_manager_unloads_and_reloads_a_real_model(onnx_path: Path) -> None:
    now = [0.0]
    manager = IdleResourceManager(idle_timeout_s=10, clock=lambda: now[0])
    manager.register("mlp", ONNXLoader(), onnx_path)
    x = {"x": np.ones((1, 4), np.float32)}
    before = manager.get("mlp").run(x)["y"]
    now[0] = 10
    assert manager.sweep() == ["mlp"]
    assert not manager.is_loaded("mlp")
    with manager.use("mlp") as model:
        np.testing.assert_array_equal(model.run(x)["y"], before)
    assert manager.load_count("mlp") == 2
