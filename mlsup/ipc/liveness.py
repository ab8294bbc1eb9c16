"""Whether a peer process still runs (callers of a worker watch it while they wait).

The check lives in :mod:`mlsup.process_identity`, with the other questions about processes;
it is importable here too, where the transport's callers have always found it.
"""

from __future__ import annotations

from mlsup.process_identity import process_alive

__all__ = ["process_alive"]
