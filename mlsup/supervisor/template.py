"""The worker template: a forkserver that imports the heavy runtimes once, so that starting a
worker costs a fork, not an import of torch.

It also resolves the model-family classes the configured models' loads will need
(:mod:`warm_names`, :mod:`template_warm`), and :func:`start_template` returns only once the
template answers a fork: the supervisor says it is ready after its template is, so the first
request after ``mlsup start`` never waits for the template's imports.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from multiprocessing import forkserver
from multiprocessing.context import BaseContext

from mlsup.kit.worker_runtime import template_environment
from mlsup.supervisor import template_warm
from mlsup.supervisor.warm_names import warm_names

__all__ = [
    "ALWAYS_PRELOAD",
    "PRELOAD",
    "launch_template",
    "preload_modules",
    "start_template",
    "wait_for_template",
]

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


def preload_modules(loaders: Iterable[str]) -> list[str]:
    """The template's imports for these loaders, in order, the class warm-up last."""
    modules = list(ALWAYS_PRELOAD)
    for loader in loaders:
        modules.extend(m for m in PRELOAD.get(loader, ()) if m not in modules)
    modules.append(template_warm.__name__)
    return modules


def _answer() -> None:
    """What the readiness fork runs: nothing (the fork itself is the answer)."""


def start_template(context: BaseContext, models: Iterable[tuple[str, str]]) -> None:
    """Start ``context``'s forkserver for ``(loader, path)`` models; return once it forks.

    Blocks for the template's imports (seconds to a minute). The supervisor calls the two
    halves apart: :func:`launch_template` on its main thread, :func:`wait_for_template` off
    its event loop.
    """
    launch_template(context, models)
    wait_for_template(context)


def launch_template(context: BaseContext, models: Iterable[tuple[str, str]]) -> None:
    """Start the forkserver, which then imports the runtimes in the background.

    Call it from the supervisor's main thread: the template arms its parent-death signal
    (:mod:`mlsup.supervisor.template_lifeline`), which the kernel sends when the *thread*
    that started it ends, so a pool thread would take the template down with it.
    """
    models = list(models)
    context.set_forkserver_preload(preload_modules(loader for loader, _ in models))
    # The forkserver inherits the environment at its start: the one way to hand it the names,
    # and the runtimes' thread settings (read when they are imported, in the template).
    os.environ[template_warm.ENV] = json.dumps(warm_names(models))
    try:
        with template_environment():
            forkserver.ensure_running()
    finally:
        os.environ.pop(template_warm.ENV, None)


def wait_for_template(context: BaseContext) -> None:
    """Return once the template serves forks, i.e. once its imports are done."""
    # A fork request is served only after the preload: its answer means the imports are done.
    probe = context.Process(target=_answer, name="mlsup-template-ready")  # type: ignore[attr-defined]
    probe.start()
    probe.join()
