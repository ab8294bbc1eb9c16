"""The worker template: a forkserver that imports the heavy runtimes once, so that starting a
worker costs a fork, not an import of torch."""

from __future__ import annotations

from collections.abc import Iterable
from multiprocessing import forkserver
from multiprocessing.context import BaseContext

__all__ = ["ALWAYS_PRELOAD", "PRELOAD", "start_template"]

#: Modules the worker template imports once, by loader.
PRELOAD: dict[str, tuple[str, ...]] = {
    "gguf": ("llama_cpp",),
    "validated-llama": ("llama_cpp",),
    "hf": ("torch", "transformers"),
    "diffusers": ("torch", "diffusers", "transformers"),
    "whisper": ("faster_whisper",),
    "onnx": ("onnxruntime",),
}
#: Modules every worker needs, whatever its loader; first, the template's own lifeline.
ALWAYS_PRELOAD = (
    "mlsup.supervisor.template_lifeline",
    "numpy",
    "psutil",
    "zmq",
    "msgpack",
    "mlsup.kit.worker",
    "mlsup.kit.loaders",
)


def start_template(context: BaseContext, loaders: Iterable[str]) -> None:
    """Start context's forkserver with the modules of these loaders imported."""
    modules = list(ALWAYS_PRELOAD)
    for loader in loaders:
        modules.extend(m for m in PRELOAD.get(loader, ()) if m not in modules)
    context.set_forkserver_preload(modules)
    forkserver.ensure_running()  # pay the imports now, not at the first load
