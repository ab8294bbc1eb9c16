"""The dashboard as a person sees it: headless Chromium on the page served by the dashboard
process, a real supervisor behind it, a plain-kit process holding a lease beside it. Every wait
is on page content (WebDriverWait), never a sleep."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from mlsup.testing.supervisor import RunningSupervisor

from .helpers import LeaseHolder, RunningDashboard

# The first test may install chromium with apt-get (the browser fixture): minutes on a fresh
# machine, which pytest-timeout counts against that test.
pytestmark = pytest.mark.timeout(1200)

#: Where `MLSUP_DASHBOARD_SCREENSHOT=1` writes the README's picture.
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"


def wait(page: Any, condition: Callable[[Any], Any], timeout: float = 30) -> Any:
    """Until condition(page) is truthy; the page re-renders, so stale elements are retried."""
    waiter = WebDriverWait(
        page,
        timeout,
        poll_frequency=0.05,
        ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
    )
    return waiter.until(condition)


def badge(page: Any, model: str) -> str:
    row = page.find_element(By.CSS_SELECTOR, f'#models tr[data-model="{model}"]')
    return str(row.find_element(By.CSS_SELECTOR, ".badge").text)


def has_badge(model: str, expected: str) -> Callable[[Any], bool]:
    return lambda page: badge(page, model) == expected


def cell(page: Any, model: str, css: str) -> str:
    row = page.find_element(By.CSS_SELECTOR, f'#models tr[data-model="{model}"]')
    return str(row.find_element(By.CSS_SELECTOR, css).text)


def test_page_lists_the_configured_models_with_their_states(page: Any) -> None:
    wait(page, lambda p: p.find_element(By.ID, "conn").text == "live")
    wait(page, has_badge("alpha", "unloaded"))
    assert badge(page, "beta") == "unloaded"
    rows = page.find_elements(By.CSS_SELECTOR, "#models tbody tr")
    assert [r.get_attribute("data-model") for r in rows] == ["alpha", "beta"]
    gpu = page.find_element(By.CSS_SELECTOR, '.gpu[data-gpu="0"]')
    assert "0 / 1000 MB leased" in gpu.text


def test_gpu_bar_shows_a_lease_of_a_plain_kit_process(
    page: Any, hold_lease: Callable[..., LeaseHolder]
) -> None:
    wait(page, has_badge("alpha", "unloaded"))
    holder = hold_lease(250, "outside-job", "high")
    segment = wait(
        page, lambda p: p.find_element(By.CSS_SELECTOR, '.segment[data-model="outside-job"]')
    )
    assert "outside-job" in segment.text and "250 MB" in segment.text and "high" in segment.text
    assert "external" in segment.get_attribute("class")
    row = page.find_element(By.CSS_SELECTOR, f'.leases tr[data-lease="{holder.lease_id}"]')
    assert "other process" in row.text and f"pid {holder.process.pid}" in row.text
    free = page.find_element(By.CSS_SELECTOR, '.gpu[data-gpu="0"] .segment.free')
    assert free.text == "free 750 MB"
    holder.release()
    wait(page, lambda p: not p.find_elements(By.CSS_SELECTOR, '.segment[data-model="outside-job"]'))


def test_a_hostile_lease_label_is_shown_as_text(
    page: Any, hold_lease: Callable[..., LeaseHolder]
) -> None:
    """Any process on the machine can name its lease anything: markup stays text."""
    hostile = '<img src=x onerror="document.body.dataset.pwned=1">'
    wait(page, has_badge("alpha", "unloaded"))
    holder = hold_lease(100, hostile)
    row = wait(
        page,
        lambda p: p.find_element(By.CSS_SELECTOR, f'.leases tr[data-lease="{holder.lease_id}"]'),
    )
    assert hostile in row.text
    assert not page.find_elements(By.CSS_SELECTOR, "#gpus img")
    assert page.execute_script("return document.body.dataset.pwned") is None


def test_gpu_bar_shows_a_waiter_and_a_pending_preemption(
    page: Any, supervisor: RunningSupervisor, hold_lease: Callable[..., LeaseHolder]
) -> None:
    holder = hold_lease(800, "batch-job", "low")
    wait(page, lambda p: p.find_element(By.CSS_SELECTOR, '.segment[data-model="batch-job"]'))
    with supervisor.client() as client:
        client.load("alpha", wait=False)  # does not fit: batch-job is asked to yield
    wait(page, lambda p: p.find_element(By.CSS_SELECTOR, ".segment.preempting"))
    row = page.find_element(By.CSS_SELECTOR, f'.leases tr[data-lease="{holder.lease_id}"]')
    assert "yielding: revoked in" in row.text
    queue = page.find_element(By.CSS_SELECTOR, '.gpu[data-gpu="0"] .waiting')
    assert "queued for VRAM" in queue.text and "300 MB, normal" in queue.text
    assert badge(page, "alpha") == "loading"
    holder.release()
    wait(page, has_badge("alpha", "ready"))
    assert not page.find_elements(By.CSS_SELECTOR, ".waiting")


def test_pressing_load_then_unload_changes_the_state(
    page: Any, supervisor: RunningSupervisor
) -> None:
    wait(page, has_badge("beta", "unloaded"))
    row = page.find_element(By.CSS_SELECTOR, '#models tr[data-model="beta"]')
    row.find_element(By.CSS_SELECTOR, "button.load").click()
    wait(page, has_badge("beta", "ready"))
    assert supervisor.row("beta")["state"] == "ready"
    wait(page, lambda p: p.find_element(By.CSS_SELECTOR, '.segment[data-model="beta"]'))

    row = page.find_element(By.CSS_SELECTOR, '#models tr[data-model="beta"]')
    row.find_element(By.CSS_SELECTOR, "button.unload").click()
    wait(page, has_badge("beta", "unloaded"))
    assert supervisor.row("beta")["state"] == "unloaded"
    wait(page, lambda p: not p.find_elements(By.CSS_SELECTOR, '.segment[data-model="beta"]'))


def test_a_worker_killed_from_outside_shows_restarting_then_ready(
    page: Any, supervisor: RunningSupervisor
) -> None:
    with supervisor.client() as client:
        pid = client.load("alpha")["pid"]
    wait(page, has_badge("alpha", "ready"))
    assert cell(page, "alpha", ".pid") == str(pid)
    os.kill(pid, signal.SIGKILL)
    wait(page, has_badge("alpha", "restarting"))  # alpha takes 2 s to load again
    wait(page, has_badge("alpha", "ready"))
    assert cell(page, "alpha", ".pid") != str(pid)
    assert cell(page, "alpha", "td:nth-child(6)") == "1"  # restarts


def test_log_panel_shows_the_chosen_models_log(page: Any, supervisor: RunningSupervisor) -> None:
    with supervisor.client() as client:
        client.load("beta")
    wait(page, has_badge("beta", "ready"))
    select = page.find_element(By.ID, "log-model")
    select.find_element(By.CSS_SELECTOR, 'option[value="beta"]').click()
    log = wait(page, lambda p: p.find_element(By.CSS_SELECTOR, '#log[data-model="beta"]'))
    wait(page, lambda p: "ready in" in log.text)


def test_two_models_loaded_screenshot(
    page: Any,
    supervisor: RunningSupervisor,
    dashboard: RunningDashboard,
    hold_lease: Callable[..., LeaseHolder],
    tmp_path: Path,
) -> None:
    """The README's picture: two supervised models and another process's lease. Written to
    docs/dashboard.png with ``MLSUP_DASHBOARD_SCREENSHOT=1``, else to the test's directory."""
    with supervisor.client() as client:
        client.load("alpha")
        client.load("beta")
        for text in ("a", "b", "c"):
            client.model("beta").embed([text])
    hold_lease(250, "reranker (notebook)", "low")
    wait(page, has_badge("alpha", "ready"))
    wait(page, has_badge("beta", "ready"))
    wait(page, lambda p: len(p.find_elements(By.CSS_SELECTOR, ".bar .segment")) == 4)
    wait(page, lambda p: cell(p, "beta", "td:nth-child(7)") == "3")  # requests, via heartbeats
    select = page.find_element(By.ID, "log-model")
    select.find_element(By.CSS_SELECTOR, 'option[value="beta"]').click()
    wait(page, lambda p: "ready in" in p.find_element(By.ID, "log").text)
    wait(
        page,
        lambda p: (
            p.find_element(By.CSS_SELECTOR, '#models tr[data-model="beta"] polyline').get_attribute(
                "stroke"
            )
            == "#2563eb"
        ),
    )  # the sparkline shows the requests
    bottom = "return Math.ceil(document.querySelector('main').getBoundingClientRect().bottom)"
    height = int(page.execute_script(bottom))
    metrics = {"width": 1400, "height": height, "deviceScaleFactor": 1, "mobile": False}
    page.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)  # the whole page
    target = SCREENSHOT if os.environ.get("MLSUP_DASHBOARD_SCREENSHOT") else tmp_path / "d.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        assert page.save_screenshot(str(target))
    finally:
        page.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
