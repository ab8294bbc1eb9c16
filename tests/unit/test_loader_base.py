"""The loaders' common boundary: error translation, missing runtimes, registry, light imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mlsup.errors import ConfigError, ModelLoadError, ModelOOM, ShutdownRequested
from mlsup.kit.loaders import get_loader, loader_names
from mlsup.kit.loaders.base import backend_errors, import_runtime, is_oom, resolve_model_path
from mlsup.kit.loaders.diffusion import DiffusersLoader
from mlsup.kit.loaders.onnx import choose_providers


class OutOfMemoryError(RuntimeError):
    """Named like torch.cuda.OutOfMemoryError, which is recognised by name (no torch import)."""


@pytest.mark.parametrize(
    "exc",
    [
        OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("CUDA error: out of memory"),
        ValueError("Failed to create llama_context"),
        RuntimeError("ggml_backend_cuda_buffer_type_alloc_buffer: failed to allocate"),
        MemoryError(),
    ],
)
def test_oom_becomes_model_oom(exc: Exception) -> None:
    assert is_oom(exc)
    with pytest.raises(ModelOOM) as info, backend_errors("/m/x.gguf", model="x"):
        raise exc
    assert info.value.__cause__ is exc
    assert info.value.context == {"path": "/m/x.gguf", "model": "x"}


def test_other_failures_become_load_errors_naming_the_path() -> None:
    cause = ValueError("tensor 'blk.0' has wrong shape")
    with (
        pytest.raises(ModelLoadError, match=r"/m/x\.gguf.*wrong shape") as info,
        backend_errors("/m/x.gguf"),
    ):
        raise cause
    assert info.value.__cause__ is cause
    assert not is_oom(cause)


def test_boundary_lets_our_errors_and_interrupts_through() -> None:
    with pytest.raises(ConfigError), backend_errors("/p"):
        raise ConfigError("x")
    with pytest.raises(ShutdownRequested), backend_errors("/p"):
        raise ShutdownRequested()


def test_missing_runtime_names_the_extra() -> None:
    with pytest.raises(ModelLoadError, match=r"pip install 'mlsup\[llama\]'"):
        import_runtime("surely_not_a_module_xyz", "llama")


def test_missing_path_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist") as info:
        resolve_model_path(tmp_path / "nope.gguf")
    assert info.value.context["path"] == str(tmp_path / "nope.gguf")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelLoadError, match=r"model_index\.json"):
        DiffusersLoader().load(tmp_path / "file")


def test_registry_names_and_classes() -> None:
    assert loader_names()[:6] == ["gguf", "validated-llama", "hf", "diffusers", "whisper", "onnx"]
    for name in loader_names()[:6]:
        assert get_loader(name).name == name
    with pytest.raises(ConfigError, match="known loaders: gguf"):
        get_loader("tensorrt")


def test_registry_finds_entry_point_loaders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real installed distribution (a .dist-info on sys.path) declaring an entry point.
    dist = tmp_path / "myplugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myplugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[mlsup.loaders]\nmine = myplugin_mod:MyLoader\nbroken = myplugin_mod:Nope\n"
    )
    (tmp_path / "myplugin_mod.py").write_text(
        "from mlsup.kit.loaders.onnx import ONNXLoader\n"
        "class MyLoader(ONNXLoader):\n    name = 'mine'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "mine" in loader_names()
    assert get_loader("mine").__name__ == "MyLoader"
    with pytest.raises(ConfigError, match="cannot be imported"):
        get_loader("broken")


def test_onnx_provider_choice() -> None:
    assert choose_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(both) == both
    assert choose_providers(both, "cpu") == ["CPUExecutionProvider"]
    with pytest.raises(ModelLoadError, match="onnxruntime-gpu"):
        choose_providers(["CPUExecutionProvider"], "cuda")


def test_importing_loaders_imports_no_runtime() -> None:
    code = (
        "import sys, mlsup, mlsup.kit.loaders, mlsup.kit.manifest, mlsup.kit.idle\n"
        "heavy = {'torch', 'llama_cpp', 'transformers', 'diffusers', 'faster_whisper',"
        " 'onnxruntime', 'ctranslate2'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
        "print(mlsup.GGUFModelLoader.__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["[]", "GGUFModelLoader"]


def test_import_mlsup_does_not_import_numpy() -> None:
    code = "import sys, mlsup; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
