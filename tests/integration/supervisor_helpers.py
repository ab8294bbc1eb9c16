"""A real supervisor process for tests: now shipped as :mod:`mlsup.testing.supervisor`."""

from __future__ import annotations

from mlsup.testing.supervisor import RunningSupervisor, manifest

__all__ = ["PREEMPTION_MODELS", "RunningSupervisor", "manifest"]

#: Two probe models that cannot both fit the simulated 1000 MB GPU: loading ``urgent`` (high
#: priority) preempts ``background`` (low).
PREEMPTION_MODELS = """
[models.background]
loader = "probe"
path = "probe.txt"
vram_mb = 800
priority = "low"
idle_timeout_s = 0

[models.urgent]
loader = "probe"
path = "probe.txt"
vram_mb = 600
priority = "high"
idle_timeout_s = 0
"""
