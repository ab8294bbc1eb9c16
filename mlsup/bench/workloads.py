"""One workload per loader kind: a real (tiny or packaged) model, how to load it, and one call.

The same :class:`Workload` drives the supervised path (a manifest entry, then a proxy call) and
the in-process baseline (the kit's loader in this process), so both run the identical model and
arguments. ``python -m mlsup.bench.workloads KIND`` is the "fresh Python" baseline of the
``load`` suite: import, load, first call, then print ``done``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlsup.errors import BenchmarkError

__all__ = ["WORKLOADS", "Workload", "by_kind"]

_SENTENCES = ["A cat sits on the mat.", "A kitten rests on a rug.", "Stocks fell today."]
_HI = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


def _tone(seconds: float = 1.0) -> np.ndarray[Any, Any]:
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


@dataclass(frozen=True)
class Workload:
    """A model of one loader kind and one representative call on it."""

    kind: str  #: the model id in the manifest and the rows' label
    loader: str
    find: Callable[[], Path]  #: builds (or finds) the model, returns its path
    op: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def manifest(self, **extra: Any) -> str:
        """The ``[models.<kind>]`` TOML table (``extra`` adds keys, e.g. ``preload``)."""
        options = ", ".join(f"{k} = {json.dumps(v)}" for k, v in self.options.items())
        lines = [f"[models.{self.kind}]", f'loader = "{self.loader}"']
        lines.append(f"path = {json.dumps(str(self.find()))}")
        lines += [f"{key} = {json.dumps(value)}" for key, value in extra.items()]
        lines.append(f"options = {{ {options} }}")
        return "\n".join(lines) + "\n\n"

    def load(self) -> tuple[Any, Any]:
        """(loader, model) loaded in this process; ``loader.unload()`` frees it."""
        from mlsup.kit.loaders import get_loader

        loader = get_loader(self.loader)()
        return loader, loader.load(self.find(), **self.options)

    def call(self, model: Any) -> Any:
        """The workload's call on an in-process model or a :class:`~mlsup.proxy.ModelProxy`."""
        return getattr(model, self.op)(*self.args, **self.kwargs)


def _tiny(name: str) -> Callable[[], Path]:
    def find() -> Path:
        from mlsup.testing import tiny_models

        path: Path = getattr(tiny_models, name)()
        return path

    return find


#: Every loader kind, tiny models first, then the packaged real ones (MiniLM, SmolLM2).
WORKLOADS: tuple[Workload, ...] = (
    Workload("onnx", "onnx", _tiny("tiny_onnx"), "run",
             ({"x": np.ones((8, 4), np.float32)},)),
    Workload("hf-causal", "hf", _tiny("tiny_causal_lm"), "generate", ("hello there",),
             {"max_tokens": 8, "temperature": 0}, {"device": "cpu", "task": "causal-lm"}),
    Workload("diffusers", "diffusers", _tiny("tiny_diffusion"), "generate_image", ("a red cube",),
             {"steps": 1, "width": 32, "height": 32, "seed": 0}, {"device": "cpu"}),
    Workload("whisper", "whisper", _tiny("tiny_whisper"), "transcribe", (_tone(),),
             {"max_new_tokens": 8, "beam_size": 1}, {"device": "cpu"}),
    Workload("minilm", "hf", _tiny("minilm_dir"), "embed", (_SENTENCES,),
             {}, {"device": "cpu", "task": "embedding"}),
    Workload("smollm2", "gguf", _tiny("smollm2_gguf"), "chat", (_HI,),
             {"max_tokens": 16, "temperature": 0, "seed": 0}, {"n_ctx": 512, "seed": 0}),
)  # fmt: skip


def by_kind(kind: str) -> Workload:
    """The workload named kind; BenchmarkError naming the known ones otherwise."""
    for workload in WORKLOADS:
        if workload.kind == kind:
            return workload
    raise BenchmarkError(f"no workload {kind!r}; known: {', '.join(w.kind for w in WORKLOADS)}")


def _fresh_python(kind: str) -> None:
    workload = by_kind(kind)
    _, model = workload.load()
    workload.call(model)
    print("done", flush=True)


if __name__ == "__main__":
    _fresh_python(sys.argv[1])
