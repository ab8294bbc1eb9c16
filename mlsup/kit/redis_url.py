"""Where the coordination Redis is: explicit, ``$MLSUP_REDIS_URL``, or the published one.

A running supervisor that started an embedded Redis publishes its URL in the runtime
directory (``redis.url``, mode 0600), so feature processes find it without configuration.
"""

from __future__ import annotations

import os
from pathlib import Path

from mlsup.errors import ConfigError
from mlsup.runtime import runtime_dir

__all__ = ["ENV_REDIS_URL", "REDIS_URL_FILE", "published_url_path", "resolve_redis_url"]

ENV_REDIS_URL = "MLSUP_REDIS_URL"
#: File name, in the runtime directory, of the embedded Redis' URL.
REDIS_URL_FILE = "redis.url"


def published_url_path() -> Path:
    """Where the embedded Redis' URL is published."""
    return runtime_dir() / REDIS_URL_FILE


def resolve_redis_url(explicit: str | None = None) -> str:
    """``explicit``, else ``$MLSUP_REDIS_URL``, else the URL a running supervisor published.

    Raises :class:`ConfigError` saying how to provide one when there is none.
    """
    if explicit:
        return explicit
    env = os.environ.get(ENV_REDIS_URL)
    if env:
        return env
    path = published_url_path()
    try:
        url = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        url = ""
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", path=str(path)) from exc
    if url:
        return url
    raise ConfigError(
        f"no Redis to coordinate GPU leases: set {ENV_REDIS_URL} (e.g. redis://127.0.0.1:6379/0), "
        f"pass redis_url=..., or run `mlsup start` so that its embedded Redis is published "
        f"in {path}",
        path=str(path),
    )
