"""GGUF loading that checks free VRAM first and falls back on OOM: all layers → fewer → CPU.

The plan (which ``n_gpu_layers`` to try, in order) is a pure function of the model's metadata
and the free VRAM, so it is unit-tested without a GPU; the loader walks it, catching
:class:`~mlsup.errors.ModelOOM`, and records what it chose in :attr:`load_report`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlsup.defaults import GGUF_N_CTX, VALIDATED_LLAMA_MARGIN_MB
from mlsup.errors import ModelOOM
from mlsup.kit.loaders.base import backend_errors, import_runtime
from mlsup.kit.loaders.gguf import GGUFModel, GGUFModelLoader
from mlsup.kit.loaders.gguf_meta import GGUFMetadata, estimate_gguf_mb, read_gguf_metadata

__all__ = ["LoadAttempt", "LoadReport", "ValidatedLlamaLoader", "nvml_free_mb", "plan_offload"]


@dataclass(frozen=True)
class LoadAttempt:
    """One try of the fallback ladder: layers offloaded, its estimate, and why it failed."""

    n_gpu_layers: int
    estimate_mb: int
    error: str | None = None


@dataclass
class LoadReport:
    """What :class:`ValidatedLlamaLoader` chose, and what it tried before."""

    free_mb: int | None
    n_layer: int
    n_gpu_layers: int = 0
    estimate_mb: int = 0
    attempts: list[LoadAttempt] = field(default_factory=list)

    @property
    def device(self) -> str:
        """``"cuda"`` (all layers), ``"cuda+cpu"`` (some) or ``"cpu"`` (none offloaded)."""
        if self.free_mb is None or self.n_gpu_layers == 0:
            return "cpu"
        return "cuda" if self.n_gpu_layers >= self.n_layer else "cuda+cpu"

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data (for a worker's READY message or logs)."""
        return {
            "device": self.device,
            "free_mb": self.free_mb,
            "n_layer": self.n_layer,
            "n_gpu_layers": self.n_gpu_layers,
            "estimate_mb": self.estimate_mb,
            "attempts": [vars(a) for a in self.attempts],
        }


def plan_offload(
    n_layer: int, free_mb: int | None, estimate: Callable[[int], float], *, margin_mb: int
) -> list[int]:
    """Offload levels to try, best first: all layers, then the most that fit, halving, then 0.

    ``free_mb`` None means no GPU: only the CPU (0 layers). Levels whose estimate plus
    ``margin_mb`` exceeds ``free_mb`` are skipped; all lower levels stay as OOM fallbacks
    because estimates can be wrong in both directions.
    """
    if free_mb is None or n_layer <= 0:
        return [0]
    budget = free_mb - margin_mb
    fitting = [n for n in range(n_layer, 0, -1) if estimate(n) <= budget]
    if not fitting:
        return [0]
    plan = [fitting[0]]
    while plan[-1] > 1:
        plan.append(plan[-1] // 2)
    return [*plan, 0]


def nvml_free_mb() -> int | None:
    """Free memory of the first visible GPU from NVML, in MB; None without a GPU or NVML."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:  # no driver or no library: this machine has no usable GPU
        return None
    try:
        if pynvml.nvmlDeviceGetCount() == 0:
            return None
        info = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0))
        return int(info.free) >> 20
    finally:
        pynvml.nvmlShutdown()


class ValidatedLlamaLoader(GGUFModelLoader):
    """A :class:`GGUFModelLoader` that validates its estimate and degrades instead of failing.

    Before loading it compares the estimate with the GPU's free memory (``free_vram``, NVML by
    default) and starts from the largest offload that fits; on OOM it retries with fewer GPU
    layers, down to the CPU. :attr:`load_report` says what it chose.
    """

    name = "validated-llama"

    def __init__(
        self,
        *,
        free_vram: Callable[[], int | None] = nvml_free_mb,
        margin_mb: int = VALIDATED_LLAMA_MARGIN_MB,
    ) -> None:
        super().__init__()
        self._free_vram = free_vram
        self._margin_mb = margin_mb
        self.load_report: LoadReport | None = None

    @property
    def free_vram(self) -> Callable[[], int | None]:
        """What this loader asks for the GPU's free memory (MB; None: no GPU)."""
        return self._free_vram

    def _load(self, path: Path, options: Mapping[str, Any]) -> GGUFModel:
        meta = read_gguf_metadata(path)
        n_ctx = int(options.get("n_ctx", GGUF_N_CTX))
        free_mb = self._free_vram()
        if free_mb is not None and not self._offload_supported():
            free_mb = None  # a CPU-only llama.cpp build would ignore n_gpu_layers: plan for CPU
        report = LoadReport(free_mb=free_mb, n_layer=meta.n_layer)
        self.load_report = report
        plan = plan_offload(
            meta.n_layer, free_mb, _estimator(meta, n_ctx), margin_mb=self._margin_mb
        )
        wanted = int(options.get("n_gpu_layers", -1))
        if wanted >= 0:  # the caller's cap: never offload more than asked
            plan = [n for n in plan if n <= wanted] or [0]
        for n_gpu_layers in plan:
            estimate = int(estimate_gguf_mb(meta, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers))
            try:
                model = self._load_llama(path, {**options, "n_gpu_layers": n_gpu_layers})
            except ModelOOM as exc:
                report.attempts.append(LoadAttempt(n_gpu_layers, estimate, str(exc)))
                if n_gpu_layers == 0:
                    raise
                continue
            report.attempts.append(LoadAttempt(n_gpu_layers, estimate))
            report.n_gpu_layers, report.estimate_mb = n_gpu_layers, estimate
            return model
        raise AssertionError("unreachable: the plan always ends with the CPU")

    def _offload_supported(self) -> bool:
        """Whether the installed llama.cpp can offload layers to a GPU at all."""
        llama_cpp = import_runtime("llama_cpp", self.extra)
        return bool(llama_cpp.llama_supports_gpu_offload())

    def _load_llama(self, path: Path, options: Mapping[str, Any]) -> GGUFModel:
        """One real load; OOM surfaces as :class:`ModelOOM` (translated here, per attempt)."""
        with backend_errors(path):
            return super()._load(path, options)


def _estimator(meta: GGUFMetadata, n_ctx: int) -> Callable[[int], float]:
    return lambda layers: estimate_gguf_mb(meta, n_ctx=n_ctx, n_gpu_layers=layers)
