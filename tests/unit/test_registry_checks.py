"""`mlsup services check` decisions, over plain registries and observations (no sockets)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mlsup.service.registry import Registry
from mlsup.service.registry_checks import (
    Health,
    HealthReport,
    Listener,
    Observation,
    ProblemKind,
    check,
    classify_health,
    duplicate_ports,
    missing_entrypoints,
    port_mismatches,
    ports_taken,
    unknown_dependencies,
)
from mlsup.service.services_file import parse_services

BASE = Path("/srv/code")


def registry(*documents: dict[str, Any]) -> Registry:
    return Registry(
        parse_services(d, source=f"/srv/code/{d['feature']['id']}/services.yaml", base_dir=BASE)
        for d in documents
    )


def feature(
    fid: str, *services: dict[str, Any], ports: dict[str, int] | None = None
) -> dict[str, Any]:
    return {"feature": {"id": fid, "ports": ports or {}}, "services": list(services)}


@pytest.mark.parametrize(
    ("status", "body", "error", "health", "detail"),
    [
        (200, b'{"status": "ok", "model_loaded": true}', "", Health.OK, "model_loaded=true"),
        (200, b'{"status": "ok", "model_loaded": false}', "", Health.OK, "model_loaded=false"),
        (200, b'{"status": "ok"}', "", Health.OK, ""),
        (503, b'{"status": "loading", "model_loaded": false}', "", Health.LOADING, "HTTP 503"),
        (503, b"", "", Health.LOADING, "HTTP 503"),
        (200, b'{"status": "loading"}', "", Health.LOADING, "status loading"),
        (None, b"", "connection refused", Health.DOWN, "connection refused"),
        (404, b"<html>not found</html>", "", Health.UNEXPECTED, "HTTP 404"),
        (500, b'{"status": "error"}', "", Health.UNEXPECTED, "HTTP 500"),
        (200, b"<html>hello</html>", "", Health.UNEXPECTED, "HTTP 200, not a health document"),
        (200, b'["status"]', "", Health.UNEXPECTED, "HTTP 200, not a health document"),
        (200, b'{"healthy": true}', "", Health.UNEXPECTED, "HTTP 200, not a health document"),
        (200, b"\xff\xfe", "", Health.UNEXPECTED, "HTTP 200, not a health document"),
    ],
)
def test_health_answers_are_classified(
    status: int | None, body: bytes, error: str, health: Health, detail: str
) -> None:
    assert classify_health(status, body, error) == HealthReport(health, detail)


def test_duplicate_ports_across_features_name_every_claimant() -> None:
    reg = registry(
        feature("a", {"id": "runner", "port": 5000}, ports={"runner": 5000, "api": 5001}),
        feature("b", {"id": "runner", "port": 5001}, {"id": "web", "port": 5002}),
        feature("c", {"id": "x", "port": 5002}),
    )
    problems = duplicate_ports(reg)
    assert [(p.kind, p.port) for p in problems] == [
        (ProblemKind.DUPLICATE_PORT, 5001),
        (ProblemKind.DUPLICATE_PORT, 5002),
    ]
    # a.runner declared in feature.ports and as a service is one claim, not a duplicate.
    assert "a.api (/srv/code/a/services.yaml)" in problems[0].message
    assert "b.runner (/srv/code/b/services.yaml)" in problems[0].message
    assert "b.web" in problems[1].message and "c.x" in problems[1].message


def test_two_services_of_one_feature_on_one_port_are_a_duplicate() -> None:
    reg = registry(feature("a", {"id": "r1", "port": 7000}, {"id": "r2", "port": 7000}))
    (problem,) = duplicate_ports(reg)
    assert "a.r1" in problem.message and "a.r2" in problem.message


def test_a_port_contradicting_feature_ports_is_reported() -> None:
    reg = registry(feature("a", {"id": "runner", "port": 5000}, ports={"runner": 5005}))
    (problem,) = port_mismatches(reg)
    assert (problem.kind, problem.service, problem.port) == (
        ProblemKind.PORT_MISMATCH,
        "runner",
        5000,
    )
    assert "feature.ports.runner is 5005" in problem.message
    assert port_mismatches(registry(feature("a", {"id": "r", "port": 1}, ports={"r": 1}))) == []


def test_dependencies_must_name_a_service_or_known_infrastructure() -> None:
    reg = registry(
        feature(
            "a",
            {"id": "runner", "dependencies": ["infrastructure.redis", "b.api", "b.web"]},
        ),
        feature(
            "b",
            {"id": "api", "dependencies": ["a.runner", "a.nope", "postgres"]},
            ports={"web": 3000},  # a named port is an endpoint of the feature
        ),
    )
    problems = unknown_dependencies(reg)
    assert [(p.feature, p.service) for p in problems] == [("b", "api"), ("b", "api")]
    assert "'a.nope'" in problems[0].message and "'postgres'" in problems[1].message
    assert "infrastructure.redis" in problems[1].message  # says what is known


def test_entrypoints_missing_or_undeclared_are_reported() -> None:
    reg = registry(
        feature(
            "a",
            {"id": "here", "entrypoint": "/srv/code/a/runner"},
            {"id": "gone", "entrypoint": "/srv/code/a/old"},
            {"id": "none"},
        )
    )
    seen = Observation(entrypoints={"/srv/code/a/runner": "/srv/code/a/runner"})
    problems = missing_entrypoints(reg, seen)
    assert [p.service for p in problems] == ["gone", "none"]
    assert "/srv/code/a/old does not exist" in problems[0].message
    assert "declares no entrypoint" in problems[1].message


RUNNER = feature("a", {"id": "runner", "port": 6000, "entrypoint": "/srv/code/a/ml-runner"})
HOME = {"/srv/code/a/ml-runner": "/data/code/a/ml-runner"}  # /srv/code is a symlink to /data/code
OK = {6000: HealthReport(Health.OK)}
NOT_FOUND = {6000: HealthReport(Health.UNEXPECTED, "HTTP 404")}


@pytest.mark.parametrize(
    ("listener", "health", "taken"),
    [
        # Its working directory is the entrypoint (real path) or inside it: the service.
        (Listener(6000, 10, "/data/code/a/ml-runner", ("python", "-m", "kv")), NOT_FOUND, False),
        (Listener(6000, 10, "/data/code/a/ml-runner/src", ("python",)), NOT_FOUND, False),
        # Its command line names a path inside the entrypoint (as declared or relative to cwd).
        (Listener(6000, 10, "/", ("python", "/srv/code/a/ml-runner/main.py")), OK, False),
        (Listener(6000, 10, "/data/code/a", ("python", "ml-runner/main.py")), OK, False),
        # Runs elsewhere: another process, even when it answers /health.
        (Listener(6000, 10, "/data/code/b", ("python", "-m", "b_runner")), OK, True),
        (Listener(6000, 10, "/data/code/a/ml-runner-old", ("python", "x")), OK, True),
        (Listener(6000, 10, "/tmp", ("python", "--root=/data/code/a/ml-runner")), OK, True),
        # Not inspectable: its /health decides.
        (Listener(6000), OK, False),
        (Listener(6000), {6000: HealthReport(Health.LOADING, "HTTP 503")}, False),
        (Listener(6000), NOT_FOUND, True),
        (Listener(6000), {6000: HealthReport(Health.DOWN, "no answer within 1 s")}, True),
        (Listener(6000, 10), NOT_FOUND, True),
    ],
)
def test_a_port_is_taken_when_its_listener_is_not_the_service(
    listener: Listener, health: dict[int, HealthReport], taken: bool
) -> None:
    seen = Observation(health=health, listeners={6000: (listener,)}, entrypoints=HOME)
    problems = ports_taken(registry(RUNNER), seen)
    assert bool(problems) is taken
    if taken:
        (problem,) = problems
        assert (problem.kind, problem.feature, problem.service, problem.port) == (
            ProblemKind.PORT_TAKEN,
            "a",
            "runner",
            6000,
        )
        assert "a.runner: port 6000 is taken by" in problem.message


def test_a_taken_port_names_the_process_and_why() -> None:
    listener = Listener(6000, 4242, "/data/code/b", ("python", "-m", "http.server", "6000"))
    seen = Observation(health=OK, listeners={6000: (listener,)}, entrypoints=HOME)
    (problem,) = ports_taken(registry(RUNNER), seen)
    assert "pid 4242 (python -m http.server 6000)" in problem.message
    assert "outside the entrypoint /srv/code/a/ml-runner" in problem.message
    assert "working directory /data/code/b" in problem.message


def test_without_an_entrypoint_health_decides_even_for_inspectable_listeners() -> None:
    reg = registry(feature("a", {"id": "runner", "port": 6000}))
    listener = Listener(6000, 10, "/anywhere", ("node", "server.js"))
    ok = Observation(health=OK, listeners={6000: (listener,)})
    assert ports_taken(reg, ok) == []
    foreign = Observation(health=NOT_FOUND, listeners={6000: (listener,)})
    (problem,) = ports_taken(reg, foreign)
    assert "does not answer GET /health as a service (unexpected: HTTP 404)" in problem.message


def test_nothing_listening_is_not_a_taken_port() -> None:
    seen = Observation(health={6000: HealthReport(Health.DOWN, "connection refused")})
    assert ports_taken(registry(RUNNER), seen) == []


def test_check_reports_every_kind_in_order_and_nothing_for_a_sound_registry() -> None:
    reg = registry(
        feature("a", {"id": "runner", "port": 6000, "dependencies": ["nope.x"]}),
        feature("b", {"id": "web", "port": 6000, "entrypoint": "/srv/b"}, ports={"web": 6001}),
    )
    seen = Observation(listeners={6001: (Listener(6001),)}, entrypoints={"/srv/b": "/srv/b"})
    kinds = [p.kind for p in check(reg, seen)]
    assert kinds == [
        ProblemKind.DUPLICATE_PORT,
        ProblemKind.PORT_MISMATCH,
        ProblemKind.MISSING_ENTRYPOINT,
        ProblemKind.UNKNOWN_DEPENDENCY,
    ]
    sound = registry(
        feature("a", {"id": "runner", "port": 6000, "entrypoint": "/srv/a"}),
        feature(
            "b",
            {
                "id": "web",
                "port": 6001,
                "entrypoint": "/srv/b",
                "dependencies": ["a.runner", "infrastructure.redis"],
            },
        ),
    )
    listening = Listener(6000, 1, "/srv/a", ("python",))
    seen = Observation(
        health=OK,
        listeners={6000: (listening,)},
        entrypoints={"/srv/a": "/srv/a", "/srv/b": "/srv/b"},
    )
    assert check(sound, seen) == []


def test_problem_rows_are_plain_json() -> None:
    from mlsup.service.registry_cli import problem_rows

    reg = registry(feature("a", {"id": "r", "dependencies": ["x.y"]}))
    rows = problem_rows(unknown_dependencies(reg))
    assert json.loads(json.dumps(rows)) == [
        {
            "kind": "unknown-dependency",
            "feature": "a",
            "service": "r",
            "port": None,
            "message": rows[0]["message"],
        }
    ]
