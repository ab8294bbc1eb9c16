"""The Lua scripts of the lease layer, read from package data.

Every script is the constants of ``common.lua`` (its text before the first function), then the
helper functions of ``common.lua`` that it calls (directly or through another helper), in their
order there, then its own file. Redis defines every function of a script on every call, so a
script carries only the helpers it uses. They are registered once per client and run with
EVALSHA (reloaded if Redis forgot them, e.g. after a restart).
"""

from __future__ import annotations

import enum
import re
from functools import cache
from importlib import resources

__all__ = ["Script", "source"]

#: Where a helper of ``common.lua`` begins (the comment lines just above it belong to it).
_HELPER = re.compile(r"^(?:--[^\n]*\n)*local function (\w+)\(", re.MULTILINE)


class Script(enum.Enum):
    """The scripts, by file name."""

    ADMISSION = "admission"
    RENEW = "renew"
    RELEASE = "release"
    RESIZE = "resize"
    REAP = "reap"
    USERS = "users"
    LEAVE = "leave"
    SWEEP = "sweep"
    PUBLISH = "publish"


def _read(name: str) -> str:
    return resources.files("mlsup.kit.leases").joinpath(f"{name}.lua").read_text(encoding="utf-8")


def _calls(text: str, name: str) -> bool:
    return re.search(rf"\b{name}\(", text) is not None


@cache
def _helpers() -> tuple[str, dict[str, str]]:
    """``common.lua`` split into its constants and its helpers (name -> text, in file order)."""
    common = _read("common")
    starts = list(_HELPER.finditer(common))
    ends = [m.start() for m in starts[1:]] + [len(common)]
    helpers = {m.group(1): common[m.start() : end] for m, end in zip(starts, ends, strict=True)}
    return common[: starts[0].start()], helpers


@cache
def source(script: Script) -> str:
    """The full text of one script, the helpers it uses included."""
    constants, helpers = _helpers()
    body = _read(script.value)
    needed: set[str] = set()
    pending = [body]
    while pending:
        text = pending.pop()
        for name, helper in helpers.items():
            if name not in needed and _calls(text, name):
                needed.add(name)
                pending.append(helper)
    used = "".join(helper for name, helper in helpers.items() if name in needed)
    return f"{constants}{used}\n{body}"
