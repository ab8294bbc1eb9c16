"""The tail of a worker's log, for the page's log panel: bounded, and only of configured models.

A model id from a browser is checked against the models the supervisor runs (so no id names a
file outside the log directory, whatever characters it holds), then the last lines are read
from the end of the file, never more than :data:`~mlsup.defaults.DASHBOARD_LOG_MAX_BYTES`.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from mlsup import defaults
from mlsup.errors import ConfigError, ModelNotFound

__all__ = ["LogTail", "check_lines", "check_model_id", "read_log_tail", "tail_lines"]


def check_model_id(model: str, known: Collection[str]) -> str:
    """``model`` if the supervisor runs it; ModelNotFound otherwise."""
    if model not in known:
        shown = model if len(model) <= 64 else model[:64] + "..."
        names = ", ".join(sorted(known)) or "none"
        raise ModelNotFound(f"no model {shown!r} in the manifest; configured: {names}")
    return model


def check_lines(lines: int) -> int:
    """A number of lines to show, within 1..``DASHBOARD_LOG_MAX_LINES``; ConfigError otherwise."""
    if not 1 <= lines <= defaults.DASHBOARD_LOG_MAX_LINES:
        raise ConfigError(
            f"lines must be within 1..{defaults.DASHBOARD_LOG_MAX_LINES}, not {lines}"
        )
    return lines


def tail_lines(data: bytes, lines: int, *, truncated: bool) -> list[str]:
    """The last ``lines`` lines of ``data``, decoded (undecodable bytes replaced). With
    ``truncated`` (data is the end of a longer file), the first, partial line is dropped."""
    text = data.decode("utf-8", errors="replace")
    parts = text.splitlines()
    if truncated and parts and not text.startswith("\n"):
        parts = parts[1:]
    return parts[-lines:] if lines > 0 else []


@dataclass(frozen=True)
class LogTail:
    """The end of one model's log (the JSON body of the log endpoint)."""

    model: str
    lines: list[str]
    truncated: bool  #: older lines were left out
    exists: bool  #: False until the model's first worker has started


def read_log_tail(
    log_dir: Path,
    model: str,
    known: Collection[str],
    lines: int,
    max_bytes: int = defaults.DASHBOARD_LOG_MAX_BYTES,
) -> LogTail:
    """The last ``lines`` lines of ``model``'s worker log in ``log_dir`` (read from the end, at
    most ``max_bytes``). ModelNotFound for a model the supervisor does not run; an empty tail
    when it has no log yet."""
    check_model_id(model, known)
    check_lines(lines)
    path = log_dir / f"{model}.log"
    if path.resolve().parent != log_dir.resolve():
        # A manifest id like "../x" would name a file elsewhere: refuse rather than read it.
        raise ModelNotFound(f"model {model!r} has no log file in {log_dir}", model=model)
    try:
        with open(path, "rb") as log:
            size = os.fstat(log.fileno()).st_size
            start = max(size - max_bytes, 0)
            log.seek(start)
            data = log.read(max_bytes)
    except FileNotFoundError:
        return LogTail(model, [], truncated=False, exists=False)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", path=str(path)) from exc
    shown = tail_lines(data, lines, truncated=start > 0)
    older = start > 0 or len(data.splitlines()) > len(shown)
    return LogTail(model, shown, truncated=older, exists=True)
