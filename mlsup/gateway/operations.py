"""Which model kinds serve which route, and what the gateway reads from a status row: pure.

A model's *kind* is its loader's name (``gguf``, ``hf``, ``whisper``...): the manifest says it,
so the answer is known before the model is loaded. Loaders the gateway does not know (a
plugin's, the test ``probe``) are let through; their worker then answers whether it serves
the operation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlsup.errors import UnsupportedOperation

__all__ = ["KNOWN_KINDS", "ROUTES", "ModelRow", "Route", "check_kind", "public_state", "read_row"]


@dataclass(frozen=True)
class Route:
    """An OpenAI route: the proxy operation it calls and the kinds that offer it."""

    path: str
    op: str
    kinds: tuple[str, ...]


ROUTES: dict[str, Route] = {
    route.op: route
    for route in (
        Route("/v1/chat/completions", "chat", ("gguf", "validated-llama", "hf")),
        Route("/v1/completions", "complete", ("gguf", "validated-llama", "hf")),
        Route("/v1/embeddings", "embed", ("hf", "gguf", "validated-llama")),
        Route("/v1/audio/transcriptions", "transcribe", ("whisper",)),
        Route("/v1/images/generations", "generate_image", ("diffusers",)),
    )
}
#: Loaders whose operations the gateway knows; others are asked (their worker answers).
KNOWN_KINDS = frozenset({"gguf", "validated-llama", "hf", "whisper", "diffusers", "onnx"})


def check_kind(model: str, kind: str, op: str) -> None:
    """UnsupportedOperation (a 400) when a model of ``kind`` cannot serve ``op``'s route."""
    route = ROUTES[op]
    if kind in KNOWN_KINDS and kind not in route.kinds:
        raise UnsupportedOperation(
            f"model {model!r} is a {kind} model; {route.path} is served by "
            f"{', '.join(route.kinds)} models",
            model=model,
            kind=kind,
        )


@dataclass(frozen=True)
class ModelRow:
    """What the gateway uses of a supervisor status row."""

    model: str
    kind: str
    state: str
    pid: int | None
    generation: int
    requests: int
    restarts: int
    gpu: int | None
    leased_mb: int | None
    last_exit: str | None
    exit_reason: str | None  #: a :class:`mlsup.contracts.ExitReason` value
    timeline: Mapping[str, float]


def read_row(row: Any) -> ModelRow:
    """The one place that reads a status row (a dict today; a typed struct tomorrow)."""
    get = (
        row.get
        if isinstance(row, Mapping)
        else lambda key, default=None: getattr(row, key, default)
    )
    return ModelRow(
        model=str(get("model")),
        kind=str(get("loader", "")),
        state=str(getattr(get("state"), "value", get("state"))),
        pid=get("pid"),
        generation=int(get("generation", 0) or 0),
        requests=int(get("requests", 0) or 0),
        restarts=int(get("restarts", 0) or 0),
        gpu=get("gpu"),
        leased_mb=get("leased_mb"),
        last_exit=get("last_exit"),
        exit_reason=None if get("exit_reason") is None else str(get("exit_reason")),
        timeline=dict(get("timeline", None) or {}),
    )


_PUBLIC_STATES = {"leasing": "loading", "starting": "loading", "backoff": "loading",
                  "draining": "unloading"}  # fmt: skip


def public_state(state: str) -> str:
    """The supervisor's state as /v1/models says it: unloaded, loading, ready, unloading,
    failed."""
    return _PUBLIC_STATES.get(state, state)
