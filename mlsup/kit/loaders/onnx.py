"""ONNX graphs with onnxruntime: arrays in, arrays out."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mlsup.defaults import TORCH_ACTIVATION_FACTOR
from mlsup.errors import ModelLoadError
from mlsup.kit.loaders.base import ModelLoader, backend_errors, file_size_mb, import_runtime

__all__ = ["ONNXLoader", "ONNXModel", "choose_providers"]

_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"


def choose_providers(available: list[str], device: str = "auto") -> list[str]:
    """Execution providers to use: CUDA first when available (or asked), always CPU last."""
    if device == "cpu":
        return [_CPU]
    if device.startswith("cuda") and _CUDA not in available:
        raise ModelLoadError(
            "device 'cuda' asked but onnxruntime has no CUDA provider; "
            "install onnxruntime-gpu or use device = 'auto'"
        )
    return [_CUDA, _CPU] if _CUDA in available else [_CPU]


class ONNXModel:
    """A loaded ONNX graph. :meth:`run` maps input names to arrays, output names to arrays."""

    def __init__(self, session: Any, path: Path) -> None:
        self._session = session
        self.path = path
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]
        self.providers = list(session.get_providers())

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph on named inputs; returns every output by name."""
        unknown = sorted(set(inputs) - set(self.input_names))
        if unknown:
            raise ModelLoadError(
                f"unknown inputs {unknown} for {self.path.name}; it takes {self.input_names}",
                path=str(self.path),
            )
        feed = {name: np.asarray(value) for name, value in inputs.items()}
        with backend_errors(self.path):
            outputs = self._session.run(self.output_names, feed)
        return {
            name: np.asarray(value) for name, value in zip(self.output_names, outputs, strict=True)
        }

    def close(self) -> None:
        """Drop the session (and the memory it holds)."""
        self._session = None


class ONNXLoader(ModelLoader):
    """Loads an ``.onnx`` file with onnxruntime.

    Options: ``device`` (``auto``: CUDA provider when present, else CPU; ``cpu``; ``cuda``),
    ``intra_op_num_threads``, ``inter_op_num_threads``.
    """

    name = "onnx"
    extra = "onnx"

    def _estimate_mb(self, path: Path, options: Mapping[str, Any]) -> float:
        files = [path, *path.parent.glob(f"{path.name}.data")]  # external weights, if any
        return file_size_mb(files) * (1 + TORCH_ACTIVATION_FACTOR)

    def _load(self, path: Path, options: Mapping[str, Any]) -> ONNXModel:
        if not path.is_file():
            raise ModelLoadError(f"{path} must be an .onnx file", path=str(path))
        ort = import_runtime("onnxruntime", self.extra)
        session_options = ort.SessionOptions()
        for key in ("intra_op_num_threads", "inter_op_num_threads"):
            if key in options:
                setattr(session_options, key, int(options[key]))
        providers = choose_providers(
            list(ort.get_available_providers()), str(options.get("device", "auto"))
        )
        session = ort.InferenceSession(str(path), session_options, providers=providers)
        return ONNXModel(session, path)
