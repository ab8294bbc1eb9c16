"""The dashboard server over HTTP, with a real supervisor behind it and httpx in front: the
snapshot, the live event stream, the actions and their guards, the log tail, a supervisor that
goes away and comes back, and the router mounted under another app's prefix and API key."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.testclient import TestClient

from mlsup.dashboard import Histogram, dashboard_router
from mlsup.testing.supervisor import RunningSupervisor

from .helpers import LeaseHolder, RunningDashboard

ACTION = {"X-Mlsup-Dashboard": "1"}


def model(snapshot: Mapping[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(m for m in snapshot["models"] if m["model"] == name)
    return found


def events(url: str) -> Iterator[dict[str, Any]]:
    """The snapshots the event stream pushes, as they come."""
    with httpx.stream("GET", url + "events", timeout=httpx.Timeout(5, read=60)) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        for line in reply.iter_lines():
            if line.startswith("data: "):
                yield json.loads(line[len("data: ") :])


def wait_snapshot(
    dashboard: RunningDashboard, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        snapshot = dashboard.snapshot()
        if predicate(snapshot):
            return snapshot
        assert time.monotonic() < deadline, f"never got there: {snapshot}\n{dashboard.output()}"
        time.sleep(0.05)


def test_snapshot_lists_the_configured_models_and_the_idle_gpu(
    dashboard: RunningDashboard, supervisor: RunningSupervisor
) -> None:
    snapshot = dashboard.snapshot()
    assert snapshot["problem"] is None
    assert snapshot["supervisor"] == str(supervisor.runtime)
    assert [(m["model"], m["badge"]) for m in snapshot["models"]] == [
        ("alpha", "unloaded"),
        ("beta", "unloaded"),
    ]
    (gpu,) = snapshot["gpus"]
    assert (gpu["gpu"], gpu["capacity_mb"], gpu["free_mb"], gpu["segments"]) == (0, 1000, 1000, [])


def test_the_page_and_its_assets_are_served_by_mlsup_itself(dashboard: RunningDashboard) -> None:
    bare = httpx.get(dashboard.url.rstrip("/"), follow_redirects=False)
    assert bare.status_code == 307 and bare.headers["location"] == dashboard.url
    page = httpx.get(dashboard.url)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'src="static/dashboard.js"' in page.text and "http" not in page.text.split("<body>")[1]
    script = httpx.get(dashboard.url + "static/dashboard.js")
    assert script.status_code == 200 and "EventSource" in script.text
    assert httpx.get(dashboard.url + "static/secret.txt").status_code == 404
    assert httpx.get(dashboard.url + "static/..%2F..%2Fpyproject.toml").status_code == 404


def test_events_push_the_load_of_a_model_as_it_happens(dashboard: RunningDashboard) -> None:
    stream = events(dashboard.url)
    first = next(stream)
    assert model(first, "alpha")["badge"] == "unloaded"
    reply = httpx.post(dashboard.url + "api/models/alpha/load", headers=ACTION, timeout=30)
    assert reply.status_code == 200, reply.text
    badges = []
    for snapshot in stream:
        badges.append(model(snapshot, "alpha")["badge"])
        if badges[-1] == "ready":
            break
    assert "loading" in badges  # alpha takes 2 s to load: the page saw it loading
    segment = snapshot["gpus"][0]["segments"][0]
    assert (segment["model"], segment["vram_mb"], segment["supervised"]) == ("alpha", 300, True)
    assert segment["measured_mb"] is not None
    stream.close()


def test_actions_need_the_page_header_and_change_nothing_without_it(
    dashboard: RunningDashboard, supervisor: RunningSupervisor
) -> None:
    reply = httpx.post(dashboard.url + "api/models/beta/load")
    assert reply.status_code == 403
    assert "X-Mlsup-Dashboard" in reply.json()["error"]["message"]
    assert supervisor.row("beta")["state"] == "unloaded"


def test_unknown_models_and_bad_arguments_are_refused(
    dashboard: RunningDashboard, supervisor: RunningSupervisor
) -> None:
    for action in ("load", "unload"):
        reply = httpx.post(dashboard.url + f"api/models/nope/{action}", headers=ACTION)
        assert reply.status_code == 404
        assert reply.json()["error"]["type"] == "ModelNotFound"
    assert httpx.get(dashboard.url + "api/models/nope/log").status_code == 404
    assert httpx.get(dashboard.url + "api/models/..%2Fsupervisor/log").status_code == 404
    assert httpx.get(dashboard.url + "api/models/alpha/log?lines=0").status_code == 400
    assert httpx.get(dashboard.url + "api/models/alpha/log?lines=many").status_code == 422
    assert [r["state"] for r in supervisor.client().status()] == ["unloaded", "unloaded"]


def test_log_tail_of_a_model_and_unload_through_the_dashboard(
    dashboard: RunningDashboard, supervisor: RunningSupervisor
) -> None:
    assert httpx.get(dashboard.url + "api/models/beta/log").json()["exists"] is False
    with supervisor.client() as client:
        client.load("beta")
    tail = httpx.get(dashboard.url + "api/models/beta/log?lines=50").json()
    assert tail["exists"] is True
    assert any("ready in" in line for line in tail["lines"]), tail

    wait_snapshot(dashboard, lambda s: model(s, "beta")["badge"] == "ready")
    reply = httpx.post(dashboard.url + "api/models/beta/unload", headers=ACTION, timeout=30)
    assert reply.status_code == 200 and reply.json() == {"model": "beta", "state": "unloaded"}
    assert supervisor.row("beta")["state"] == "unloaded"
    snapshot = wait_snapshot(dashboard, lambda s: model(s, "beta")["badge"] == "unloaded")
    assert snapshot["gpus"][0]["segments"] == []


def test_waiters_and_pending_preemptions_are_shown(
    dashboard: RunningDashboard,
    supervisor: RunningSupervisor,
    hold_lease: Callable[..., LeaseHolder],
) -> None:
    holder = hold_lease(800, "batch-job", "low")
    with supervisor.client() as client:
        client.load("alpha", wait=False)  # 300 MB more than fits: alpha asks batch-job to yield

    def asked_to_yield(snapshot: dict[str, Any]) -> bool:
        gpu = snapshot["gpus"][0]
        return bool(gpu["waiting"]) and gpu["segments"][0]["preempt_in_s"] is not None

    snapshot = wait_snapshot(dashboard, asked_to_yield)
    (segment,) = snapshot["gpus"][0]["segments"]
    assert (segment["lease_id"], segment["supervised"]) == (holder.lease_id, False)
    (waiter,) = snapshot["gpus"][0]["waiting"]
    assert (waiter["vram_mb"], waiter["priority"]) == (300, "normal")
    assert model(snapshot, "alpha")["badge"] == "loading"
    holder.release()  # it yields: alpha gets the VRAM
    ready = wait_snapshot(dashboard, lambda s: model(s, "alpha")["badge"] == "ready")
    assert ready["gpus"][0]["waiting"] == []


def test_survives_the_supervisor_going_away_and_coming_back(
    dashboard: RunningDashboard, supervisor: RunningSupervisor
) -> None:
    assert supervisor.stop() == 0
    down = wait_snapshot(dashboard, lambda s: s["problem"] is not None)
    assert "supervisor" in down["problem"] and down["models"] == []
    assert httpx.get(dashboard.url).status_code == 200  # still serving
    reply = httpx.post(dashboard.url + "api/models/alpha/load", headers=ACTION)
    assert reply.status_code == 503
    assert reply.json()["error"]["type"] == "SupervisorUnavailable"
    # The logs of the models it last saw stay readable while the supervisor is down.
    assert httpx.get(dashboard.url + "api/models/alpha/log").status_code == 200
    supervisor.start()
    back = wait_snapshot(dashboard, lambda s: s["problem"] is None and len(s["models"]) == 2)
    assert model(back, "alpha")["badge"] == "unloaded"


def test_router_mounts_under_another_apps_prefix_and_api_key(
    supervisor: RunningSupervisor,
) -> None:
    """The gateway's seam: one include_router line; its API key guards the dashboard too, and
    a latency source shows percentiles."""
    calls = {"n": 0}

    def latency() -> dict[str, Histogram]:
        # beta: every poll 10 more requests, all between 10 and 100 ms.
        calls["n"] += 1
        count = 10 * calls["n"]
        return {"beta": Histogram((0.01, 0.1, 1.0), (0, count, count, count))}

    def api_key(authorization: str = Header(default="")) -> None:
        if authorization != "Bearer k":
            raise HTTPException(401, "bad key")

    @contextlib.asynccontextmanager
    async def own_lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.started = True  # the gateway has a lifespan of its own: both must run
        yield

    app = FastAPI(lifespan=own_lifespan)
    app.include_router(
        dashboard_router(supervisor.runtime, latency=latency),
        prefix="/ui",
        dependencies=[Depends(api_key)],
    )
    with TestClient(app) as client:
        assert client.get("/ui/").status_code == 401
        auth = {"Authorization": "Bearer k"}
        assert client.get("/ui/", headers=auth).status_code == 200
        deadline = time.monotonic() + 30
        while True:
            snapshot = client.get("/ui/api/snapshot", headers=auth).json()
            beta = snapshot and model(snapshot, "beta")["activity"]
            if beta and beta["p50_ms"] is not None:
                break
            assert time.monotonic() < deadline, snapshot
            time.sleep(0.05)
        assert beta["latency_measured"] is True
        assert 10 < beta["p50_ms"] < beta["p99_ms"] <= 100
        assert model(snapshot, "alpha")["activity"]["latency_measured"] is False
        assert app.state.started is True


def test_a_failing_latency_source_is_reported_not_fatal(supervisor: RunningSupervisor) -> None:
    def broken() -> dict[str, Histogram]:
        raise RuntimeError("histograms unavailable")

    app = FastAPI()
    app.include_router(dashboard_router(supervisor.runtime, latency=broken), prefix="/ui")
    with TestClient(app) as client:
        deadline = time.monotonic() + 30
        while (snapshot := client.get("/ui/api/snapshot").json()) is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert "histograms unavailable" in snapshot["problem"]
        assert len(snapshot["models"]) == 2  # the rest of the page is still there


@pytest.mark.parametrize("listen", ["nohost", "127.0.0.1:http", "127.0.0.1:70000"])
def test_bad_listen_addresses_are_refused(listen: str) -> None:
    from mlsup.cli import main as mlsup_main
    from mlsup.dashboard.cli import main

    assert main(["--listen", listen]) == 2
    assert mlsup_main(["dashboard", "--listen", listen]) == 2
