"""GGUF models through llama-cpp-python: chat, completion, embeddings, tokenization."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np

from mlsup.defaults import GGUF_N_CTX
from mlsup.errors import ModelLoadError
from mlsup.kit.loaders.base import ModelLoader, backend_errors, import_runtime
from mlsup.kit.loaders.gguf_meta import estimate_gguf_mb, read_gguf_metadata

__all__ = ["GGUFModel", "GGUFModelLoader"]

Message = Mapping[str, Any]


class GGUFModel:
    """A loaded GGUF model. Every result is plain data or a numpy array (msgpack-safe).

    Non-streaming ``chat``/``complete`` return the generated text as ``str``; with
    ``stream=True`` they return an iterator of text pieces whose concatenation is that text.
    Generation keywords (``max_tokens``, ``temperature``, ``top_p``, ``top_k``, ``seed``,
    ``stop``, ``repeat_penalty``, ...) are llama-cpp-python's.
    """

    def __init__(self, llama: Any, path: Path, *, embedding: bool) -> None:
        self._llama = llama
        self.path = path
        self._embedding = embedding

    @property
    def n_ctx(self) -> int:
        """Context length of the loaded model (tokens)."""
        return int(self._llama.n_ctx())

    @overload
    def chat(self, messages: list[Message], stream: Literal[False] = ..., **gen: Any) -> str: ...
    @overload
    def chat(self, messages: list[Message], stream: Literal[True], **gen: Any) -> Iterator[str]: ...
    def chat(
        self, messages: list[Message], stream: bool = False, **gen: Any
    ) -> str | Iterator[str]:
        """Answer a conversation (OpenAI-style ``{"role", "content"}`` messages) with text."""
        with backend_errors(self.path):
            result = self._llama.create_chat_completion(
                messages=[dict(m) for m in messages], stream=stream, **gen
            )
        if stream:
            return self._pieces(result, lambda c: c["choices"][0]["delta"].get("content"))
        return str(result["choices"][0]["message"]["content"] or "")

    @overload
    def complete(self, prompt: str, stream: Literal[False] = ..., **gen: Any) -> str: ...
    @overload
    def complete(self, prompt: str, stream: Literal[True], **gen: Any) -> Iterator[str]: ...
    def complete(self, prompt: str, stream: bool = False, **gen: Any) -> str | Iterator[str]:
        """Continue ``prompt``; returns only the generated text."""
        with backend_errors(self.path):
            result = self._llama.create_completion(prompt=prompt, stream=stream, **gen)
        if stream:
            return self._pieces(result, lambda c: c["choices"][0].get("text"))
        return str(result["choices"][0]["text"])

    def embed(self, texts: list[str]) -> np.ndarray:
        """One pooled embedding per text: float32 array of shape ``(len(texts), dim)``."""
        if not self._embedding:
            raise ModelLoadError(
                f"{self.path.name} was loaded without embeddings; load it with option "
                "embedding = true",
                path=str(self.path),
            )
        with backend_errors(self.path):
            rows = self._llama.embed(list(texts))
        array = np.asarray(rows, dtype=np.float32)
        if array.ndim != 2 or array.shape[0] != len(texts):
            raise ModelLoadError(
                f"{self.path.name} returned per-token embeddings; load it with a pooling_type",
                path=str(self.path),
            )
        return array

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` (with the model's BOS token when it uses one)."""
        with backend_errors(self.path):
            return [int(t) for t in self._llama.tokenize(text.encode("utf-8"))]

    def close(self) -> None:
        """Free the llama.cpp model and context."""
        llama, self._llama = self._llama, None
        if llama is not None:
            llama.close()

    def _pieces(self, chunks: Iterator[Any], text_of: Any) -> Iterator[str]:
        # Errors may surface mid-stream: translate them at the same boundary.
        with backend_errors(self.path):
            for chunk in chunks:
                piece = text_of(chunk)
                if piece:
                    yield str(piece)


class GGUFModelLoader(ModelLoader):
    """Loads GGUF files with llama-cpp-python.

    Options: ``n_ctx`` (default :data:`~mlsup.defaults.GGUF_N_CTX`), ``n_gpu_layers`` (-1: all
    layers on the GPU; ignored by CPU builds), ``seed``, ``n_threads``, ``n_batch``,
    ``embedding`` (enables :meth:`GGUFModel.embed`; mean pooling unless ``pooling_type`` says
    otherwise), ``chat_format``, and any other keyword of
    ``llama_cpp.Llama``.
    """

    name = "gguf"
    extra = "llama"

    def _estimate_mb(self, path: Path, options: Mapping[str, Any]) -> float:
        meta = read_gguf_metadata(path)
        return estimate_gguf_mb(
            meta,
            n_ctx=int(options.get("n_ctx", GGUF_N_CTX)),
            n_gpu_layers=int(options.get("n_gpu_layers", -1)),
        )

    def _load(self, path: Path, options: Mapping[str, Any]) -> GGUFModel:
        read_gguf_metadata(path)  # a clear error for a file that is not GGUF, before llama.cpp
        llama_cpp = import_runtime("llama_cpp", self.extra)
        kwargs = {"n_ctx": GGUF_N_CTX, "n_gpu_layers": -1, "verbose": False, **options}
        if kwargs.get("embedding") and "pooling_type" not in kwargs:
            # Chat models declare no pooling, and llama.cpp would return one vector per token.
            kwargs["pooling_type"] = llama_cpp.LLAMA_POOLING_TYPE_MEAN
        llama = llama_cpp.Llama(model_path=str(path), **kwargs)
        return GGUFModel(llama, path, embedding=bool(kwargs.get("embedding", False)))
