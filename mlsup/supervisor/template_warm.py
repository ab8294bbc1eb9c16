"""Imported last by the worker template (a forkserver preload): resolves the classes that the
configured models' loads will need, so that every forked worker finds them imported.

The supervisor passes the names (``package:Attribute``, from
:func:`mlsup.supervisor.warm_names.warm_names`) in ``$MLSUP_TEMPLATE_WARM`` as a JSON list: a
forkserver preload can only name modules, and importing is the only thing it does with them.
Only packages in ``WARM_PACKAGES`` are looked up; a name that fails to resolve is skipped (its
load will report the error). Runs no model code and creates no threads, so forking stays safe.
"""

from __future__ import annotations

import importlib
import json
import os

from mlsup.supervisor.warm_names import WARM_PACKAGES

__all__ = ["ENV", "warm"]

#: The environment variable carrying the names.
ENV = "MLSUP_TEMPLATE_WARM"


def warm(names: list[str]) -> list[str]:
    """Import each ``package[.module]:Attribute`` (and resolve the attribute, if any); returns
    the names that resolved."""
    resolved = []
    for name in names:
        module, _, attribute = name.partition(":")
        if module.split(".")[0] not in WARM_PACKAGES:
            continue
        try:
            found = importlib.import_module(module)
            if attribute:
                found = getattr(found, attribute)
                # A diffusers scheduler's config load imports its compatible schedulers.
                compatibles = getattr(found, "_get_compatibles", None)
                if callable(compatibles):
                    compatibles()
        except Exception:  # noqa: BLE001 - a warm-up never fails the template
            continue
        resolved.append(name)
    if any(name.startswith("transformers") for name in resolved):
        _prime_transformers()
    return resolved


def _prime_transformers() -> None:
    """Build transformers' checkpoint conversion table now (pure data, no threads).

    transformers (v5) builds it, about a thousand regular expressions, on the first load of any
    model and keeps it: 0.27 s of MiniLM's 0.48 s load in a forked worker (cProfile), nothing in
    a warm process. Built here, every worker inherits it.
    """
    try:
        mapping = importlib.import_module("transformers.conversion_mapping")
        getter = getattr(mapping, "get_checkpoint_conversion_mapping", None)
        if callable(getter):
            getter("")
    except Exception:  # noqa: BLE001 - a warm-up never fails the template
        return


def _from_env() -> list[str]:
    try:
        names = json.loads(os.environ.get(ENV, "[]"))
    except ValueError:
        return []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


warm(_from_env())
