"""Which sidecars run, decided from the configuration alone; the [http] table's validation."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from mlsup import defaults
from mlsup.errors import ConfigError
from mlsup.gateway.settings import API_KEY_ENV, HttpSettings, parse_listen
from mlsup.kit.manifest import Manifest, ModelSpec
from mlsup.supervisor.config import RuntimePaths, SupervisorConfig
from mlsup.supervisor.sidecars import sidecar_specs


def config() -> SupervisorConfig:
    manifest = Manifest(source="/etc/mlsup.toml", models_dir=Path("/models"))
    return SupervisorConfig(manifest, RuntimePaths(Path("/run/rt")), None, [])


def test_the_manifests_own_http_table_is_read_by_default() -> None:
    manifest = Manifest(source="/etc/mlsup.toml", models_dir=Path("/models"),
                        http={"listen": "9000", "api_key": "k"})  # fmt: skip
    [spec] = sidecar_specs(SupervisorConfig(manifest, RuntimePaths(Path("/run/rt")), None, []))
    assert spec.argv[4] == "127.0.0.1:9000" and spec.env[API_KEY_ENV] == "k"


def test_no_http_table_and_no_flag_runs_no_sidecar() -> None:
    assert sidecar_specs(config()) == []
    assert sidecar_specs(config(), {}) == []
    assert sidecar_specs(config(), {"http": {"api_key": "k"}}) == []


def test_http_listen_runs_the_gateway_with_its_settings() -> None:
    tables = {"http": {"listen": "0.0.0.0:8123", "api_key": "sekret", "max_queue": 8}}
    [spec] = sidecar_specs(config(), tables)
    assert spec.name == "gateway"
    assert spec.argv == (
        sys.executable, "-m", "mlsup.gateway", "--listen", "0.0.0.0:8123", "--max-queue", "8",
    )  # fmt: skip
    assert spec.env == {"MLSUP_RUNTIME_DIR": "/run/rt", API_KEY_ENV: "sekret"}
    assert "sekret" not in " ".join(spec.argv)  # never visible in ps
    assert spec.stop_grace_s == defaults.SIDECAR_STOP_GRACE_S


def test_the_flag_overrides_the_table_and_a_bare_port_is_loopback() -> None:
    [spec] = sidecar_specs(config(), {"http": {"listen": "0.0.0.0:1"}}, http="8000")
    assert spec.argv[4] == f"{defaults.GATEWAY_HOST}:8000"
    assert API_KEY_ENV not in spec.env
    [flag_only] = sidecar_specs(config(), {}, http="[::1]:9000")
    assert flag_only.argv[4:] == ("[::1]:9000", "--max-queue", str(defaults.GATEWAY_MAX_QUEUE))


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("8000", ("127.0.0.1", 8000)),
        ("127.0.0.1:8000", ("127.0.0.1", 8000)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        ("localhost:8000", ("localhost", 8000)),
        ("[::1]:8000", ("::1", 8000)),
        (" gpu-box.lan:65535 ", ("gpu-box.lan", 65535)),
    ],
)
def test_listen_addresses(address: str, expected: tuple[str, int]) -> None:
    assert parse_listen(address) == expected


@pytest.mark.parametrize(
    "address",
    ["", ":8000", "host:", "host:0", "host:65536", "host:http", "::1:8000", "[::1]", "a b:80",
     "under_score:80"],
)  # fmt: skip
def test_bad_listen_addresses_say_the_expected_form(address: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_listen(address)
    assert info.value.context["field"] == "http.listen"


@pytest.mark.parametrize(
    ("table", "field"),
    [
        ("listen", "http"),
        ({"listen": 8000}, "http.listen"),
        ({"listen": "127.0.0.1:8000", "port": 1}, "http.port"),
        ({"listen": "127.0.0.1:8000", "api_key": ""}, "http.api_key"),
        ({"listen": "127.0.0.1:8000", "api_key": 5}, "http.api_key"),
        ({"listen": "127.0.0.1:8000", "max_queue": 0}, "http.max_queue"),
        ({"listen": "127.0.0.1:8000", "max_queue": True}, "http.max_queue"),
        ({"listen": "127.0.0.1:8000", "max_queue": 2.5}, "http.max_queue"),
    ],
)
def test_bad_http_tables_are_config_errors_naming_file_and_field(table: Any, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        sidecar_specs(config(), {"http": table})
    assert info.value.context == {"file": "/etc/mlsup.toml", "field": field}
    assert "/etc/mlsup.toml" in str(info.value)


def test_settings_listen_round_trips() -> None:
    settings = HttpSettings.parse({"listen": "[::1]:8000"}, "f")
    assert settings is not None and settings.listen == "[::1]:8000"
    assert parse_listen(settings.listen) == ("::1", 8000)


def test_with_queues_the_gateway_is_given_the_config_for_their_metrics() -> None:
    tables = {"http": {"listen": "9000"}, "queues": {"digest": {"model": "m", "op": "run"}}}
    manifest = Manifest(
        source="/etc/mlsup.toml",
        models_dir=Path("/models"),
        models={"m": ModelSpec(id="m", loader="onnx", path="/models/m.onnx")},
    )
    specs = sidecar_specs(
        SupervisorConfig(manifest, RuntimePaths(Path("/run/rt")), None, []), tables
    )
    gateway = next(spec for spec in specs if spec.name == "gateway")
    assert gateway.argv[-2:] == ("--config", "/etc/mlsup.toml")
    assert [spec.name for spec in specs] == ["gateway", "queues"]
