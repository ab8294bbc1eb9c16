"""A real supervisor process for tests: now shipped as :mod:`mlsup.testing.supervisor`."""

from __future__ import annotations

from mlsup.testing.supervisor import RunningSupervisor, manifest

__all__ = ["RunningSupervisor", "manifest"]
