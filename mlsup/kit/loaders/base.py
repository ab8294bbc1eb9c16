"""The common interface of every loader, and the one place where backend errors are translated.

A loader loads one model at a time::

    loader = GGUFModelLoader()
    mb = loader.estimate_vram(path, n_ctx=2048)    # before leasing VRAM
    model = loader.load(path, n_ctx=2048)           # the runtime's model, wrapped
    model.chat([{"role": "user", "content": "hi"}])
    loader.unload()                                 # frees the memory

Loaded models return only plain data (``str``, ``int``, ``float``, ``list``, ``dict``) and numpy
arrays, so that a supervised worker can send the very same results over msgpack.

Heavy runtimes are imported inside the loaders' methods, never at module level, so that
``import mlsup`` stays fast on machines that lack them.
"""

from __future__ import annotations

import gc
import importlib
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

from mlsup.errors import MlsupError, ModelLoadError, ModelOOM

if TYPE_CHECKING:
    from mlsup.kit.manifest import ModelSpec

__all__ = [
    "ModelLoader",
    "backend_errors",
    "file_size_mb",
    "free_torch_memory",
    "import_runtime",
    "is_oom",
    "resolve_model_path",
]

# Substrings by which runtimes report running out of memory. torch raises
# torch.cuda.OutOfMemoryError (a RuntimeError) with "CUDA out of memory"; llama.cpp reports
# failed buffer allocations through llama-cpp-python as ValueError("Failed to create llama_context")
# or "failed to allocate"; ctranslate2 and onnxruntime say "out of memory" / "Failed to allocate".
_OOM_MARKERS = (
    "out of memory",
    "outofmemory",
    "failed to allocate",
    "cudaerrormemoryallocation",
    "cuda_error_out_of_memory",
    "cublas_status_alloc_failed",
    "failed to create llama_context",
)


def is_oom(exc: BaseException) -> bool:
    """Whether a backend exception means that a device ran out of memory."""
    if isinstance(exc, MemoryError):
        return True
    if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError, no torch import
        return True
    text = f"{type(exc).__name__}: {exc}".lower()
    return any(marker in text for marker in _OOM_MARKERS)


@contextmanager
def backend_errors(path: str | Path, *, model: str | None = None) -> Iterator[None]:
    """Translate a runtime's exceptions into mlsup's, at the one boundary of every loader.

    Out-of-memory errors become :class:`ModelOOM`; missing or unreadable files and any other
    backend failure become :class:`ModelLoadError` naming ``path``. mlsup's own errors and
    :class:`BaseException` (shutdown, preemption) pass through untouched.
    """
    try:
        yield
    except MlsupError:
        raise
    except Exception as exc:
        if is_oom(exc):
            raise ModelOOM(
                f"out of memory with {Path(path).name}: {exc}; lower the context, offload "
                "fewer layers, or free VRAM",
                path=str(path),
                model=model,
            ) from exc
        raise ModelLoadError(
            f"cannot load or run {path}: {type(exc).__name__}: {exc}", path=str(path), model=model
        ) from exc


def import_runtime(module: str, extra: str) -> ModuleType:
    """Import a heavy runtime, or say which extra to install when it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ModelLoadError(
            f"the {module!r} runtime is not installed; install it with "
            f"pip install 'mlsup[{extra}]'",
            runtime=module,
            extra=extra,
        ) from exc


def resolve_model_path(path: str | Path, *, directory: bool | None = None) -> Path:
    """The absolute path of a model, checked to exist (``directory``: must be a dir / a file)."""
    resolved = Path(path).expanduser().resolve()
    if not resolved.exists():
        raise ModelLoadError(
            f"model path {resolved} does not exist; check the manifest's path and models_dir",
            path=str(resolved),
        )
    if directory is True and not resolved.is_dir():
        raise ModelLoadError(f"model path {resolved} must be a directory", path=str(resolved))
    if directory is False and not resolved.is_file():
        raise ModelLoadError(f"model path {resolved} must be a file", path=str(resolved))
    return resolved


def file_size_mb(paths: list[Path]) -> float:
    """Total size of files in MB (MiB): the memory their weights occupy once loaded."""
    return sum(p.stat().st_size for p in paths) / (1 << 20)


def free_torch_memory() -> None:
    """Collect garbage and return cached CUDA blocks, if torch is already imported."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


class ModelLoader(ABC):
    """Loads one model of one runtime, estimates its memory, and unloads it.

    Subclasses set :attr:`name` (the manifest's ``loader`` value) and :attr:`extra` (the pip
    extra that installs their runtime), and implement :meth:`_estimate_mb` and :meth:`_load`.
    One loader instance holds at most one model; :meth:`load` unloads the previous one first.
    """

    #: The manifest's ``loader`` value.
    name: ClassVar[str] = ""
    #: The pip extra that installs the runtime (``pip install 'mlsup[EXTRA]'``).
    extra: ClassVar[str] = ""

    def __init__(self) -> None:
        self.model: Any = None
        self.path: Path | None = None

    def estimate_vram(self, spec_or_path: ModelSpec | str | Path, **options: Any) -> int:
        """VRAM the model needs with these options, in MB (rounded up).

        A :class:`~mlsup.kit.manifest.ModelSpec` with ``vram_mb`` set returns that value: the
        manifest's figure overrides the estimate. Otherwise the spec's options, updated with
        ``options``, are used.
        """
        path, merged = _path_and_options(spec_or_path, options)
        if not isinstance(spec_or_path, (str, Path)) and spec_or_path.vram_mb is not None:
            return spec_or_path.vram_mb
        resolved = resolve_model_path(path)
        with backend_errors(resolved):
            return max(1, int(-(-self._estimate_mb(resolved, merged) // 1)))

    def load(self, path: ModelSpec | str | Path, **options: Any) -> Any:
        """Load the model at ``path`` (or of a spec) and return it, ready to serve."""
        path, merged = _path_and_options(path, options)
        self.unload()
        resolved = resolve_model_path(path)
        with backend_errors(resolved):
            self.model = self._load(resolved, merged)
        self.path = resolved
        return self.model

    def unload(self) -> None:
        """Drop the model and free its memory (host and, where relevant, CUDA cache)."""
        model, self.model = self.model, None
        if model is None:
            return
        close = getattr(model, "close", None)
        if callable(close):
            close()
        del model
        free_torch_memory()

    @property
    def loaded(self) -> bool:
        """Whether a model is loaded."""
        return self.model is not None

    @abstractmethod
    def _estimate_mb(self, path: Path, options: Mapping[str, Any]) -> float:
        """Estimate in MB, without loading the weights."""

    @abstractmethod
    def _load(self, path: Path, options: Mapping[str, Any]) -> Any:
        """Load and wrap the model; backend errors are translated by the caller."""


def _path_and_options(
    spec_or_path: ModelSpec | str | Path, options: Mapping[str, Any]
) -> tuple[str | Path, dict[str, Any]]:
    if isinstance(spec_or_path, (str, Path)):
        return spec_or_path, dict(options)
    return spec_or_path.path, {**spec_or_path.options, **options}
