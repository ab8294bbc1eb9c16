"""The Lua scripts of the lease layer, read from package data.

Every script is ``common.lua`` (shared helpers) followed by its own file. They are registered
once per client and run with EVALSHA (redis-py reloads them if Redis forgot them, e.g. after a
restart).
"""

from __future__ import annotations

import enum
from functools import cache
from importlib import resources

__all__ = ["Script", "source"]


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


@cache
def source(script: Script) -> str:
    """The full text of one script, helpers included."""
    package = resources.files("mlsup.kit.leases")
    common = package.joinpath("common.lua").read_text(encoding="utf-8")
    body = package.joinpath(f"{script.value}.lua").read_text(encoding="utf-8")
    return f"{common}\n{body}"
