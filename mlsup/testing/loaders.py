"""``probe``: a loader whose model misbehaves on request, for testing supervision.

It stands in for a runtime on machines that cannot make a real one run out of GPU memory or
crash: the supervisor's reactions (respawn, re-lease after OOM, FAILED after a crash loop) can
then be tested with real processes. It is no production loader: a manifest may name it only
where :func:`register_probe` ran (the test suite, ``mlsup bench``), which names it in
``$MLSUP_LOADERS`` for that process and the supervisors and workers it starts::

    [models.flaky]
    loader = "probe"
    path = "probe.txt"                       # any existing file
    options = { crash_on_load = true }       # or oom_below_mb = 300, load_s = 2.0, dim = 16,
                                             # cuda_mb = 600 (really allocated, with torch)

Its model serves ``embed(texts)`` (deterministic vectors), ``complete(prompt)`` (reversed,
optionally slow and streamed) and ``run(inputs)``, which echoes
its inputs, or with ``{"sleep": s}`` sleeps, ``{"crash": 1}`` dies of SIGKILL,
``{"oom": 1}`` raises ModelOOM, ``{"hold_gil": s}`` computes for about s seconds in one C call
that never releases the GIL (a runtime stuck in native code: its heartbeat thread cannot run).
"""

from __future__ import annotations

import os
import signal
import time
import zlib
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import numpy as np

from mlsup.errors import ModelOOM
from mlsup.kit.loaders.base import ModelLoader
from mlsup.kit.loaders.registry import register_loader

__all__ = ["PROBE_TARGET", "ProbeLoader", "ProbeModel", "register_probe"]

#: Where the probe loader lives, as the loader registry names it.
PROBE_TARGET = "mlsup.testing.loaders:ProbeLoader"


class ProbeModel:
    """The model a :class:`ProbeLoader` loads."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.held: Any = None  #: device memory it holds (``cuda_mb``)

    def embed(self, texts: list[str]) -> np.ndarray[Any, Any]:
        """One deterministic unit vector per text (seeded by the text's CRC-32)."""
        vectors = [
            np.random.default_rng(zlib.crc32(text.encode())).standard_normal(self.dim)
            for text in texts
        ]
        array = np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)
        normalized: np.ndarray[Any, Any] = array / np.linalg.norm(array, axis=1, keepdims=True)
        return normalized

    def complete(
        self, prompt: str, stream: bool = False, *, delay_s: float = 0.0, **gen: Any
    ) -> str | Iterator[str]:
        """``prompt`` reversed, after ``delay_s``; streamed one character a piece, each piece
        ``delay_s`` apart, with ``stream=True``."""
        if not stream:
            time.sleep(delay_s)
            return prompt[::-1]

        def pieces() -> Iterator[str]:
            for char in prompt[::-1]:
                time.sleep(delay_s)
                yield char

        return pieces()

    def run(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Echo inputs, or misbehave as they ask (see the module docstring)."""
        if inputs.get("crash"):
            os.kill(os.getpid(), signal.SIGKILL)
        if inputs.get("oom"):
            raise ModelOOM("CUDA out of memory (probe)", model=os.environ.get("MLSUP_MODEL"))
        if "sleep" in inputs:
            time.sleep(float(inputs["sleep"]))
        if "hold_gil" in inputs:
            _hold_gil(float(inputs["hold_gil"]))
        return dict(inputs)


def _hold_gil(seconds: float) -> None:
    """Compute for about ``seconds`` in one call of C code that keeps the GIL: ``sum`` over a
    ``range`` never returns to the interpreter loop, where other threads get their turn."""
    started = time.perf_counter()
    sample = 2_000_000
    sum(range(sample))
    rate = sample / max(time.perf_counter() - started, 1e-6)
    sum(range(int(rate * seconds)))


class ProbeLoader(ModelLoader):
    """Loads a :class:`ProbeModel`; options make the load slow, crash, or run out of memory."""

    name = "probe"
    extra = ""

    def _estimate_mb(self, path: Path, options: Mapping[str, Any]) -> float:
        return float(options.get("estimate_mb", 64))

    def _load(self, path: Path, options: Mapping[str, Any]) -> ProbeModel:
        time.sleep(float(options.get("load_s", 0.0)))
        if options.get("crash_on_load"):
            os.kill(os.getpid(), signal.SIGKILL)
        needed = options.get("oom_below_mb")
        leased = int(os.environ.get("MLSUP_LEASED_MB", "0"))
        if needed is not None and leased < int(needed):
            raise ModelOOM(f"CUDA out of memory: needs {needed} MB, leased {leased} MB (probe)")
        model = ProbeModel(int(options.get("dim", 8)))
        if options.get("cuda_mb"):
            import torch

            model.held = torch.empty(
                int(options["cuda_mb"]) << 20, dtype=torch.uint8, device="cuda"
            )
        return model


def register_probe(environ: MutableMapping[str, str] | None = None) -> None:
    """Make ``loader = "probe"`` valid in ``environ`` (default: this process's environment)
    and in every process started with it."""
    register_loader(ProbeLoader.name, PROBE_TARGET, environ)
