"""What a model's load will import, read from its config files (pure: files in, names out).

The worker template imports the runtimes (torch, transformers, ...), but a load then imports
the model-family modules too: transformers and diffusers resolve their classes lazily
(``transformers.BertModel`` imports ``transformers.models.bert.modeling_bert`` and what it
needs, on first access). Those imports are most of a fresh worker's load phase. The template
resolves the names this module lists (``package:Attribute``) before the supervisor says it is
ready, so every worker forked from it finds them imported.

A missing or malformed config file yields no names: the load reports it, not the template.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["WARM_PACKAGES", "warm_names"]

#: The packages whose attributes the template may resolve: a model's config files name classes,
#: and only these lazy namespaces are looked up (never an arbitrary module a file names).
WARM_PACKAGES = ("transformers", "diffusers")

#: What every load of a loader resolves, whatever the model (its ``from_pretrained`` entry points).
_ALWAYS: dict[str, tuple[str, ...]] = {
    "hf": (
        "transformers:AutoConfig",
        "transformers:AutoModel",
        "transformers:AutoModelForCausalLM",
        "transformers:AutoTokenizer",
    ),
    # A pipeline load also imports its guiders and the ONNX helpers (measured: sys.modules).
    "diffusers": (
        "diffusers:DiffusionPipeline",
        "diffusers.guiders:",
        "diffusers.pipelines.onnx_utils:",
    ),
}


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _is_name(value: object) -> bool:
    return isinstance(value, str) and value.isidentifier()


def _hf(root: Path) -> list[str]:
    config = _json(root / "config.json")
    classes = [a for a in config.get("architectures") or [] if _is_name(a)]
    tokenizer = _json(root / "tokenizer_config.json").get("tokenizer_class")
    if isinstance(tokenizer, str) and tokenizer.isidentifier():
        classes.append(tokenizer)
        if not tokenizer.endswith("Fast"):
            classes.append(f"{tokenizer}Fast")  # AutoTokenizer prefers the fast one
    return [f"transformers:{c}" for c in classes]


def _diffusers(root: Path) -> list[str]:
    index = _json(root / "model_index.json")
    names = []
    if _is_name(index.get("_class_name")):
        names.append(f"diffusers:{index['_class_name']}")
    for value in index.values():
        # Components are [library, class]: ["transformers", "CLIPTextModel"].
        component = isinstance(value, list) and len(value) == 2
        if component and value[0] in WARM_PACKAGES and _is_name(value[1]):
            names.append(f"{value[0]}:{value[1]}")
    return names


_FROM_FILES = {"hf": _hf, "diffusers": _diffusers}


def warm_names(models: Iterable[tuple[str, str]]) -> list[str]:
    """The ``package[.module]:Attribute`` names (an empty attribute: the module alone) that
    the loads of ``(loader, path)`` models will resolve, first seen first, without repeats."""
    names: list[str] = []
    for loader, path in models:
        read = _FROM_FILES.get(loader)
        found = [*_ALWAYS.get(loader, ()), *(read(Path(path)) if read else ())]
        names.extend(n for n in found if n not in names)
    return names
