"""`mlsup services` as a user runs it, against real HTTP servers and a real services tree."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

MLSUP = [sys.executable, "-m", "mlsup"]
HEALTH_SERVER = Path(__file__).with_name("health_server.py")


def mlsup(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # Only what the test gives says where the registry is; a wide terminal keeps rows whole.
    inherited = {
        k: v for k, v in os.environ.items() if k not in ("MLSUP_SERVICES_ROOT", "MLSUP_CONFIG")
    }
    environment = {**inherited, "COLUMNS": "200", **env}
    return subprocess.run(
        [*MLSUP, *args], capture_output=True, text=True, timeout=60, check=False, env=environment
    )


@pytest.fixture
def start_server() -> Iterator[Callable[[str, Path], tuple[int, int]]]:
    """Start health_server.py in a directory; returns (port, pid) once it listens."""
    servers: list[subprocess.Popen[str]] = []

    def start(mode: str, cwd: Path) -> tuple[int, int]:
        cwd.mkdir(parents=True, exist_ok=True)
        server = subprocess.Popen(
            [sys.executable, str(HEALTH_SERVER), mode], cwd=cwd, stdout=subprocess.PIPE, text=True
        )
        servers.append(server)
        assert server.stdout is not None
        line = server.stdout.readline()  # printed once the socket listens
        assert line.strip().isdigit(), f"health server failed to start: {line!r}"
        return int(line), server.pid

    yield start
    for server in servers:
        server.terminate()
    for server in servers:
        server.wait(timeout=10)
        assert server.stdout is not None
        server.stdout.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def declare(root: Path, feature: str, port: int, entrypoint: str = "ml-runner", *deps: str) -> Path:
    directory = root / feature
    directory.mkdir(parents=True, exist_ok=True)
    dependencies = ", ".join(["infrastructure.redis", *deps])
    (directory / "services.yaml").write_text(
        f"feature:\n  id: {feature}\n  name: {feature.title()}\n  ports: {{ml-runner: {port}}}\n"
        f"services:\n  - id: ml-runner\n    name: {feature} runner\n    type: ml\n"
        f"    port: {port}\n    entrypoint: {entrypoint}\n"
        f'    startCommand: "python -m runner"\n    gpu: true\n'
        f"    dependencies: [{dependencies}]\n",
        encoding="utf-8",
    )
    return directory


@pytest.fixture
def tree(tmp_path: Path, start_server: Callable[[str, Path], tuple[int, int]]) -> Path:
    """Three features whose runners are up, loading, and down."""
    root = tmp_path / "code"
    ok_port, _ = start_server("ok", root / "ready" / "ml-runner")
    loading_port, _ = start_server("loading", root / "warming" / "ml-runner")
    declare(root, "ready", ok_port)
    declare(root, "warming", loading_port, "ml-runner", "ready.ml-runner")
    declare(root, "stopped", free_port())
    (root / "stopped" / "ml-runner").mkdir()
    # A dependency's copy of a services.yaml is never part of the registry.
    declare(root / "ready" / "ml-runner" / ".venv" / "lib", "vendored", 1)
    return root


def test_listing_shows_each_services_live_health(tree: Path) -> None:
    out = mlsup("services", "--json", "--root", str(tree))
    assert out.returncode == 0, out.stderr
    rows = {row["feature"]: row for row in json.loads(out.stdout)}
    assert sorted(rows) == ["ready", "stopped", "warming"]
    assert rows["ready"]["health"] == "ok"
    assert rows["ready"]["health_detail"] == "model_loaded=true"
    assert rows["warming"]["health"] == "loading"
    assert rows["stopped"]["health"] == "down"
    ready = rows["ready"]
    assert ready["url"] == f"http://127.0.0.1:{ready['port']}"
    assert ready["gpu"] is True and ready["type"] == "ml"
    assert (ready["feature_name"], ready["name"]) == ("Ready", "ready runner")
    assert ready["start_command"] == "python -m runner"
    assert ready["source"] == str(tree / "ready" / "services.yaml")
    assert ready["entrypoint"] == str(tree / "ready" / "ml-runner")
    assert rows["warming"]["dependencies"] == ["infrastructure.redis", "ready.ml-runner"]

    table = mlsup("services", "--root", str(tree))
    assert table.returncode == 0, table.stderr
    lines = {line.split()[0]: line for line in table.stdout.splitlines() if line.strip()}
    assert "FEATURE" in lines and "PORT" in lines["FEATURE"] and "HEALTH" in lines["FEATURE"]
    assert " ok (model_loaded=true)" in lines["ready"]
    assert " loading " in lines["warming"] and " down " in lines["stopped"]
    # One dependency per line, under the service's row.
    assert "infrastructure.redis" in lines["warming"]
    assert "ready.ml-runner" in table.stdout.split(lines["warming"], 1)[1].splitlines()[1]


def test_check_passes_on_a_sound_tree(tree: Path) -> None:
    out = mlsup("services", "check", "--root", str(tree))
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("ok: 3 feature(s), 3 service(s)")


def test_check_lists_every_problem_and_fails(
    tree: Path, tmp_path: Path, start_server: Callable[[str, Path], tuple[int, int]]
) -> None:
    # Another program, run from elsewhere, sits on the port of the "victim" feature.
    intruder_port, intruder_pid = start_server("foreign", tmp_path / "elsewhere")
    declare(tree, "victim", intruder_port)
    (tree / "victim" / "ml-runner").mkdir()
    declare(tree, "ghost", free_port(), "gone/ml-runner", "billing.api")
    rows = json.loads(mlsup("services", "--json", "--root", str(tree)).stdout)
    twin_port = next(r["port"] for r in rows if r["feature"] == "stopped")
    declare(tree, "twin", twin_port)
    (tree / "twin" / "ml-runner").mkdir()

    out = mlsup("services", "check", "--json", "--root", str(tree))
    assert out.returncode == 1, out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] is False and report["features"] == 6
    by_kind = {p["kind"]: p for p in report["problems"]}
    assert sorted(by_kind) == [
        "duplicate-port",
        "missing-entrypoint",
        "port-taken",
        "unknown-dependency",
    ]
    assert len(report["problems"]) == 4
    taken = by_kind["port-taken"]
    assert (taken["feature"], taken["port"]) == ("victim", intruder_port)
    assert f"pid {intruder_pid}" in taken["message"]
    assert "health_server.py foreign" in taken["message"]
    assert by_kind["duplicate-port"]["port"] == twin_port
    assert "stopped.ml-runner" in by_kind["duplicate-port"]["message"]
    assert "twin.ml-runner" in by_kind["duplicate-port"]["message"]
    assert str(tree / "ghost" / "gone" / "ml-runner") in by_kind["missing-entrypoint"]["message"]
    assert "'billing.api'" in by_kind["unknown-dependency"]["message"]

    text = mlsup("services", "check", "--root", str(tree))
    assert text.returncode == 1
    assert text.stdout.startswith(f"4 problem(s) in {tree}:")
    for kind in by_kind:
        assert f"  {kind}: " in text.stdout


def test_url_prints_the_address_for_scripts(tree: Path) -> None:
    rows = json.loads(mlsup("services", "--json", "--root", str(tree)).stdout)
    port = next(r["port"] for r in rows if r["feature"] == "ready")
    out = mlsup("services", "url", "ready", "ml-runner", MLSUP_SERVICES_ROOT=str(tree))
    assert (out.returncode, out.stdout) == (0, f"http://127.0.0.1:{port}\n")
    # The root may also come from mlsup.toml, the file `mlsup start` reads.
    config = tree.parent / "mlsup.toml"
    config.write_text(f'services_root = "{tree.name}"\n')
    out = mlsup("services", "url", "ready", "ml-runner", MLSUP_CONFIG=str(config))
    assert out.stdout == f"http://127.0.0.1:{port}\n"

    missing = mlsup("services", "url", "nope", "ml-runner", "--root", str(tree))
    assert missing.returncode == 1 and missing.stdout == ""
    assert "no feature 'nope'" in missing.stderr and "ready" in missing.stderr


def test_a_broken_services_file_fails_naming_file_and_field(tree: Path) -> None:
    broken = tree / "broken" / "services.yaml"
    broken.parent.mkdir()
    broken.write_text("feature: {id: broken}\nservices: [{id: r, port: eighty}]\n")
    out = mlsup("services", "--root", str(tree))
    assert out.returncode == 1 and out.stdout == ""
    assert f"{broken}: services[0].port: Expected int, got str" in out.stderr


def test_help_explains_the_commands() -> None:
    out = mlsup("services", "--help")
    assert out.returncode == 0
    for words in ("check", "url", "--root", "--json", "GET /health"):
        assert words in out.stdout
    bad = mlsup("services", "--timeout", "0", "--root", ".")
    assert bad.returncode == 2 and "more than 0 seconds" in bad.stderr
