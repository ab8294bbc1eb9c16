"""Shared fixtures: a real Redis with an isolated key prefix per test, a private runtime dir."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlsup.testing.loaders import register_probe
from mlsup.testing.redis import TestRedis, test_redis

# The probe loader is no production entry point: the suite names it for itself and for every
# supervisor and worker it starts (they inherit the environment).
register_probe()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[TestRedis]:
    with test_redis() as server:
        yield server


@pytest.fixture
def redis_prefix(redis_server: TestRedis) -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    prefix = redis_server.prefix()
    yield prefix
    redis_server.cleanup(prefix)


@pytest.fixture
def runtime_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private runtime directory (short path: unix socket paths are limited to ~107 bytes)."""
    path = Path(tmp_path_factory.mktemp("rt", numbered=True))
    path.chmod(0o700)
    monkeypatch.setenv("MLSUP_RUNTIME_DIR", str(path))
    return path


def pytest_report_header() -> list[str]:
    return [f"mlsup test redis: {os.environ.get('MLSUP_TEST_REDIS_URL', 'auto')}"]
