"""A per-process VRAM reading a test controls: what NVML would say, for simulated devices.

Name a JSON file in ``$MLSUP_FAKE_VRAM`` for the supervisor (and its environment), then write
``{"<pid>": MB}`` into it with :func:`set_vram`; the supervisor enforces leases against it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["FileVramUsage", "set_vram"]


class FileVramUsage:
    """Reads ``{"<pid>": MB}`` from a file; a missing or half-written file reads as empty."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def read(self) -> Mapping[int, int]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return {int(pid): int(mb) for pid, mb in data.items()}
        except (OSError, ValueError, AttributeError, TypeError):
            return {}


def set_vram(path: str | Path, used: Mapping[int, int]) -> None:
    """Make the reading at ``path`` say ``used`` (pid → MB), atomically."""
    target = Path(path)
    temporary = target.with_suffix(".tmp")
    temporary.write_text(json.dumps({str(pid): mb for pid, mb in used.items()}), encoding="utf-8")
    os.replace(temporary, target)
