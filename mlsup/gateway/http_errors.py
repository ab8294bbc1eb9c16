"""mlsup's typed errors as HTTP answers with the OpenAI error body: a pure table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlsup import defaults
from mlsup.errors import (
    CapacityExceeded,
    ConfigError,
    LeaseError,
    MlsupError,
    ModelFailed,
    ModelLoadError,
    ModelNotFound,
    ModelOOM,
    PeerGone,
    Preempted,
    ProtocolError,
    QueueFull,
    RequestTimeout,
    SupervisorUnavailable,
    TransportError,
    UnsupportedOperation,
    WorkerCrashed,
)
from mlsup.gateway.shapes import error_body

__all__ = ["HttpError", "http_error"]


@dataclass(frozen=True)
class HttpError:
    """A status, an OpenAI error body and headers (``Retry-After`` where a retry may work)."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def _code(exc: MlsupError) -> str:
    """``WorkerCrashed`` → ``worker_crashed``: the typed reason, machine-readable."""
    name = type(exc).__name__
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(name))


# (error class, status, OpenAI type, retry later?), most specific first.
_TABLE: tuple[tuple[type[MlsupError], int, str, bool], ...] = (
    (ModelNotFound, 404, "invalid_request_error", False),
    (UnsupportedOperation, 400, "invalid_request_error", False),
    (ConfigError, 400, "invalid_request_error", False),
    (ProtocolError, 400, "invalid_request_error", False),
    (QueueFull, 429, "rate_limit_error", True),
    (Preempted, 503, "service_unavailable", True),
    (WorkerCrashed, 503, "service_unavailable", True),
    (PeerGone, 503, "service_unavailable", True),
    (ModelOOM, 503, "service_unavailable", True),
    (ModelFailed, 503, "service_unavailable", False),
    (CapacityExceeded, 503, "service_unavailable", False),
    (LeaseError, 503, "service_unavailable", True),
    (RequestTimeout, 504, "timeout", True),
    (SupervisorUnavailable, 503, "service_unavailable", True),
    (TransportError, 503, "service_unavailable", True),
    (ModelLoadError, 500, "server_error", False),
)


def http_error(exc: MlsupError, *, param: str | None = None) -> HttpError:
    """The HTTP answer to ``exc``: its status, body (``code`` names the typed reason) and a
    ``Retry-After`` when trying again later may succeed."""
    status, type_, retry = 500, "server_error", False
    for cls, cls_status, cls_type, cls_retry in _TABLE:
        if isinstance(exc, cls):
            status, type_, retry = cls_status, cls_type, cls_retry
            break
    if isinstance(exc, ModelNotFound):
        param = "model"
    headers = {"Retry-After": str(defaults.GATEWAY_RETRY_AFTER_S)} if retry else {}
    return HttpError(status, error_body(exc.message, type_, _code(exc), param), headers)
