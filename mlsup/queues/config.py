"""``[queues.<name>]`` tables of ``mlsup.toml``: which supervised model serves which BullMQ queue.

::

    [queues.summaries]
    model = "smollm2"        # a model of [models.<id>]
    op = "chat"              # default operation; a job's data may name another via "op"
    concurrency = 1          # jobs of this queue in flight at once
    attempts = 3             # for jobs whose producer set none
    backoff = 1000           # ms, exponential; or { type = "fixed", delay = 500 }

Parsing is pure (raw TOML in, frozen :class:`QueueSpec` out) and checks every queue against
the manifest: an unknown model, or an operation its loader kind lacks, is a
:class:`~mlsup.errors.ConfigError` naming the file, the queue and the field, before anything
runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlsup import defaults
from mlsup.errors import ConfigError
from mlsup.kit.manifest import Manifest, ModelSpec, load_manifest

__all__ = [
    "ALL_OPERATIONS",
    "QueueSpec",
    "load_queues",
    "model_operations",
    "parse_queues",
    "queue_prefix",
]

#: Every operation a supervised worker serves (``mlsup.kit.worker.OPERATIONS``).
ALL_OPERATIONS = frozenset(
    {"chat", "complete", "generate", "embed", "tokenize", "generate_image", "transcribe", "run"}
)
_LLAMA = frozenset({"chat", "complete", "embed", "tokenize"})
_CAUSAL = frozenset({"chat", "complete", "generate", "embed", "tokenize"})
#: Operations of each built-in loader kind's models. Plugin loaders are not known here: any
#: operation is accepted for them, and the worker answers for the ones their models lack.
_LOADER_OPERATIONS: Mapping[str, frozenset[str]] = {
    "gguf": _LLAMA,
    "validated-llama": _LLAMA,
    "hf": _CAUSAL,
    "diffusers": frozenset({"generate_image"}),
    "whisper": frozenset({"transcribe"}),
    "onnx": frozenset({"run"}),
}
_KEYS = (
    "model", "op", "concurrency", "attempts", "backoff", "model_wait_s", "lock_duration_ms",
    "stalled_interval_ms",
)  # fmt: skip
_BACKOFF_TYPES = ("exponential", "fixed")


def model_operations(spec: ModelSpec) -> frozenset[str]:
    """The operations ``spec``'s model offers, from its loader kind (and ``task`` for ``hf``)."""
    if spec.loader == "hf" and spec.options.get("task") == "embedding":
        return frozenset({"embed", "tokenize"})
    return _LOADER_OPERATIONS.get(spec.loader, ALL_OPERATIONS)


@dataclass(frozen=True)
class QueueSpec:
    """One ``[queues.<name>]`` table, validated.

    ``operations`` are those of the model (a job may name any of them); ``backoff`` is
    BullMQ's ``{"type", "delay"}`` (ms).
    """

    name: str
    model: str
    op: str
    operations: frozenset[str]
    concurrency: int = defaults.QUEUE_CONCURRENCY
    attempts: int = defaults.QUEUE_ATTEMPTS
    backoff: Mapping[str, Any] | None = None
    model_wait_s: float = defaults.QUEUE_MODEL_WAIT_S
    lock_duration_ms: int = defaults.QUEUE_LOCK_DURATION_MS
    stalled_interval_ms: int = defaults.QUEUE_STALLED_INTERVAL_MS

    def job_backoff(self) -> Mapping[str, Any]:
        """The backoff given to jobs whose producer set none."""
        if self.backoff is not None:
            return self.backoff
        return {"type": "exponential", "delay": defaults.QUEUE_BACKOFF_MS}


def queue_prefix(redis_prefix: str) -> str:
    """BullMQ's key prefix under mlsup.toml's ``[redis] prefix``: ``bull`` when that is empty."""
    return f"{redis_prefix}{defaults.QUEUE_KEY_PREFIX}"


def load_queues(path: str | Path) -> tuple[Manifest, dict[str, QueueSpec]]:
    """Read ``mlsup.toml``: its manifest and its queues."""
    manifest = load_manifest(path)
    return manifest, parse_queues({"queues": manifest.queues or {}}, manifest)


def parse_queues(tables: Mapping[str, Any], manifest: Manifest) -> dict[str, QueueSpec]:
    """Every ``[queues.<name>]`` of the raw TOML ``tables``, checked against ``manifest``."""
    queues = tables.get("queues", {})
    source = manifest.source
    if not isinstance(queues, Mapping):
        raise ConfigError(
            f"{source}: queues must be a table of [queues.<name>] tables", file=source,
            field="queues",
        )  # fmt: skip
    return {name: _queue(name, table, manifest) for name, table in queues.items()}


def _queue(name: str, table: Any, manifest: Manifest) -> QueueSpec:
    def error(field: str | None, problem: str) -> ConfigError:
        where = f"{manifest.source}: [queues.{name}]" + (f" {field}" if field else "")
        return ConfigError(f"{where}: {problem}", file=manifest.source, queue=name, field=field)

    if not name or ":" in name:
        raise error(None, "a queue name must be non-empty and without ':' (BullMQ's separator)")
    if not isinstance(table, Mapping):
        raise error(None, "must be a table")
    unknown = sorted(set(table) - set(_KEYS))
    if unknown:
        raise error(unknown[0], f"unknown key; a queue takes {', '.join(_KEYS)}")
    model_id = table.get("model")
    if not isinstance(model_id, str) or not model_id:
        raise error("model", "is required: the id of a [models.<id>] table")
    if model_id not in manifest.models:
        known = ", ".join(sorted(manifest.models)) or "none"
        raise error("model", f"no model {model_id!r} in the manifest; known models: {known}")
    model = manifest.models[model_id]
    operations = model_operations(model)
    op = table.get("op")
    if not isinstance(op, str) or op not in operations:
        raise error(
            "op",
            f"{op!r} is not an operation of model {model_id!r} ({model.loader} loader); "
            f"it offers {', '.join(sorted(operations))}",
        )

    def positive(key: str, default: int) -> int:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise error(key, f"must be a positive integer, not {value!r}")
        return value

    wait = table.get("model_wait_s", defaults.QUEUE_MODEL_WAIT_S)
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or wait < 0:
        raise error("model_wait_s", f"must be a number >= 0 (seconds), not {wait!r}")
    return QueueSpec(
        name=name,
        model=model_id,
        op=op,
        operations=operations,
        concurrency=positive("concurrency", defaults.QUEUE_CONCURRENCY),
        attempts=positive("attempts", defaults.QUEUE_ATTEMPTS),
        backoff=_backoff(table.get("backoff"), error),
        model_wait_s=float(wait),
        lock_duration_ms=positive("lock_duration_ms", defaults.QUEUE_LOCK_DURATION_MS),
        stalled_interval_ms=positive("stalled_interval_ms", defaults.QUEUE_STALLED_INTERVAL_MS),
    )


def _backoff(value: Any, error: Any) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return {"type": "exponential", "delay": value}
    if isinstance(value, Mapping) and set(value) == {"type", "delay"}:
        kind, delay = value["type"], value["delay"]
        valid_delay = isinstance(delay, int) and not isinstance(delay, bool) and delay >= 0
        if kind in _BACKOFF_TYPES and valid_delay:
            return {"type": kind, "delay": delay}
    raise error(
        "backoff",
        f'must be a delay in ms (exponential) or {{ type = "exponential" | "fixed", '
        f"delay = MS }}, not {value!r}",
    )
