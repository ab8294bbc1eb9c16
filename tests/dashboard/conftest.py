"""Fixtures of the dashboard tests: a real supervisor with two probe models on a simulated GPU,
the dashboard server in front of it, plain-kit lease holders, and a headless Chromium."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mlsup.testing.redis import TestRedis
from mlsup.testing.supervisor import RunningSupervisor, manifest

from .helpers import MODELS, LeaseHolder, RunningDashboard, chromium_paths, install_chromium


@pytest.fixture
def supervisor(
    tmp_path_factory: pytest.TempPathFactory, redis_server: TestRedis, redis_prefix: str
) -> Iterator[RunningSupervisor]:
    # A short directory: unix socket paths are limited to ~107 bytes.
    directory = tmp_path_factory.mktemp("dash", numbered=True)
    sup = RunningSupervisor(directory, manifest(redis_server.url, redis_prefix, MODELS)).start()
    yield sup
    sup.stop()


@pytest.fixture
def dashboard(supervisor: RunningSupervisor) -> Iterator[RunningDashboard]:
    server = RunningDashboard(supervisor.runtime, supervisor.directory / "dashboard.log")
    server.wait_ready()
    yield server
    # uvicorn ends by re-raising the SIGTERM it handled, after a clean shutdown.
    assert server.stop() in (0, -signal.SIGTERM), server.output()


@pytest.fixture
def hold_lease(redis_server: TestRedis, redis_prefix: str) -> Iterator[Callable[..., LeaseHolder]]:
    """``hold_lease(vram_mb, model_id, priority)``: a plain-kit process holding a lease."""
    holders: list[LeaseHolder] = []

    def hold(vram_mb: int, model_id: str, priority: str = "normal") -> LeaseHolder:
        holder = LeaseHolder(redis_server.url, redis_prefix, vram_mb, model_id, priority)
        holders.append(holder)
        return holder

    yield hold
    for holder in holders:
        holder.release()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Chromium through Selenium; installs Debian's packages when missing (root),
    skips with the reason only where they cannot be installed."""
    problem = install_chromium()
    if problem is not None:
        pytest.skip(problem)
    paths = chromium_paths()
    assert paths is not None
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for argument in (
        "--headless=new",
        "--no-sandbox",  # tests run as root in CI containers
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(paths[1]))
    yield driver
    driver.quit()


@pytest.fixture
def page(browser: Any, dashboard: RunningDashboard) -> Any:
    """The browser on the dashboard, once the first snapshot is rendered."""
    browser.get(dashboard.url)
    return browser
