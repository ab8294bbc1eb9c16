"""Model loaders of the kit, one module per runtime, and their registry.

Importing this package imports no runtime (torch, llama_cpp, ...): each loader imports its own
when it loads a model.
"""

from __future__ import annotations

from mlsup.kit.loaders.base import ModelLoader, backend_errors
from mlsup.kit.loaders.diffusion import DiffusersLoader, DiffusionModel
from mlsup.kit.loaders.gguf import GGUFModel, GGUFModelLoader
from mlsup.kit.loaders.hf import HFModel, HFModelLoader
from mlsup.kit.loaders.onnx import ONNXLoader, ONNXModel
from mlsup.kit.loaders.registry import (
    ENTRY_POINT_GROUP,
    LOADERS_ENV,
    get_loader,
    loader_names,
    register_loader,
)
from mlsup.kit.loaders.validated_llama import LoadReport, ValidatedLlamaLoader
from mlsup.kit.loaders.whisper import WhisperLoader, WhisperModel

__all__ = [
    "ENTRY_POINT_GROUP",
    "LOADERS_ENV",
    "DiffusersLoader",
    "DiffusionModel",
    "GGUFModel",
    "GGUFModelLoader",
    "HFModel",
    "HFModelLoader",
    "LoadReport",
    "ModelLoader",
    "ONNXLoader",
    "ONNXModel",
    "ValidatedLlamaLoader",
    "WhisperLoader",
    "WhisperModel",
    "backend_errors",
    "get_loader",
    "loader_names",
    "register_loader",
]
