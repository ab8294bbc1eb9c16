"""The feature-runner service layer of the seed document: each feature serves its own models.

- :func:`create_app`, :class:`GPULifespanManager`, :func:`serve`: a FastAPI runner with
  ``/health``, ``/chat``, JSON errors, CORS and idle shutdown, on its ``services.yaml`` port.
- :class:`FallbackChain`: named tiers tried in order when one cannot serve now.
- :class:`Registry`: every feature's ``services.yaml``, service ports and URLs.

Names are imported on first use, so ``import mlsup.service`` imports neither FastAPI nor
uvicorn (install them with ``pip install 'mlsup[service]'``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlsup.lazy import lazy_exports

if TYPE_CHECKING:
    from mlsup.service.app import create_app
    from mlsup.service.app_lifespan import GPULifespanManager
    from mlsup.service.app_serve import serve
    from mlsup.service.fallback import FallbackChain, FallbackResult, TierFailure
    from mlsup.service.registry import Registry

#: Public name -> module that defines it.
_LAZY = {
    "create_app": "mlsup.service.app",
    "GPULifespanManager": "mlsup.service.app_lifespan",
    "serve": "mlsup.service.app_serve",
    "FallbackChain": "mlsup.service.fallback",
    "FallbackResult": "mlsup.service.fallback",
    "TierFailure": "mlsup.service.fallback",
    "Registry": "mlsup.service.registry",
}

__all__ = [
    "FallbackChain",
    "FallbackResult",
    "GPULifespanManager",
    "Registry",
    "TierFailure",
    "create_app",
    "serve",
]


__getattr__ = lazy_exports(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
