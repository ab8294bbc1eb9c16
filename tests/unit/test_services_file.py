"""services.yaml parsing: the seed document's file, and every error naming its file and field."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from mlsup.errors import ConfigError
from mlsup.service import services_file
from mlsup.service.services_file import load_services_file

SEED = """\
# ~/Code/@applications/@ml/knowledge-platform/services.yaml
feature:
  id: knowledge-verification
  name: Knowledge Verification
  ports:
    api: 41233
    ml-runner: 41234 # Feature's own ML runner
services:
  - id: ml-runner
    name: Knowledge ML Runner
    type: ml
    port: 41234
    entrypoint: ~/Code/@applications/@ml/knowledge-platform/ml-runner
    startCommand: "source .venv/bin/activate && python -m kv_ml_runner"
    gpu: true
    dependencies:
      - infrastructure.redis # For GPUBoss coordination
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "services.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_the_seed_documents_file_parses_into_typed_objects(tmp_path: Path) -> None:
    feature = load_services_file(write(tmp_path, SEED))
    assert (feature.id, feature.name) == ("knowledge-verification", "Knowledge Verification")
    assert feature.ports == {"api": 41233, "ml-runner": 41234}
    assert feature.source == str(tmp_path / "services.yaml")
    (runner,) = feature.services
    assert runner.id == "ml-runner" and runner.title == "Knowledge ML Runner"
    assert (runner.type, runner.port, runner.gpu) == ("ml", 41234, True)
    assert runner.start_command == "source .venv/bin/activate && python -m kv_ml_runner"
    assert runner.dependencies == ("infrastructure.redis",)
    # ~ expands to the home directory.
    home = os.path.expanduser("~")
    assert runner.entrypoint == f"{home}/Code/@applications/@ml/knowledge-platform/ml-runner"
    assert feature.service("ml-runner") is runner and feature.service("nope") is None


def test_defaults_relative_entrypoints_and_ports_from_the_feature_table(tmp_path: Path) -> None:
    feature = load_services_file(
        write(
            tmp_path,
            """\
            feature: {id: f1, ports: {runner: 5001}}
            services:
              - {id: runner, entrypoint: ml-runner}
              - {id: worker}
            """,
        )
    )
    runner, worker = feature.services
    assert feature.name == "f1"
    assert runner.port == 5001  # taken from feature.ports.runner
    assert runner.entrypoint == str(tmp_path / "ml-runner")
    assert runner.title == "runner" and not runner.gpu and runner.dependencies == ()
    assert (worker.port, worker.entrypoint, worker.start_command) == (None, None, None)


def test_keys_of_other_tools_are_tolerated(tmp_path: Path) -> None:
    feature = load_services_file(
        write(
            tmp_path,
            """\
            version: 2
            feature: {id: f1, owner: team-a}
            services:
              - {id: api, port: 4000, healthCheck: /health, env: {A: "1"}}
            """,
        )
    )
    assert feature.services[0].port == 4000


BAD = [
    # (file text, field named, words in the message)
    ("- just\n- a list\n", None, "must be a mapping"),
    ("", None, "not empty"),
    ("feature: [unclosed\n", None, "not valid YAML"),
    ("services: []\n", "feature", "is required"),
    ("feature: {name: x}\n", "feature.id", "is required"),
    ("feature: {id: a.b}\n", "feature.id", "no dots"),
    ("feature: {id: ''}\n", "feature.id", "must start with"),
    ("feature: {id: 12}\n", "feature.id", "Expected str, got int"),
    ("feature: {id: f, ports: {api: '80'}}\n", "feature.ports.api", "Expected int, got str"),
    ("feature: {id: f, ports: {api: 99999}}\n", "feature.ports.api", "<= 65535"),
    ("feature: {id: f, ports: {8080: 1}}\n", "feature.ports.8080", "must be strings"),
    ("feature: {id: f, ports: [80]}\n", "feature.ports", "Expected object, got array"),
    ("feature: {id: f}\nservices: {id: x}\n", "services", "Expected array, got object"),
    ("feature: {id: f}\nservices: [{name: x}]\n", "services[0].id", "is required"),
    (
        "feature: {id: f}\nservices: [{id: ok}, {id: run, port: high}]\n",
        "services[1].port",
        "Expected int, got str (service 'run')",
    ),
    ("feature: {id: f}\nservices: [{id: r, port: 70000}]\n", "services[0].port", "<= 65535"),
    ("feature: {id: f}\nservices: [{id: r, port: 0}]\n", "services[0].port", ">= 1"),
    ("feature: {id: f}\nservices: [{id: r, gpu: 'yes'}]\n", "services[0].gpu", "Expected bool"),
    ("feature: {id: f}\nservices: [{id: r, gpu: 1}]\n", "services[0].gpu", "Expected bool"),
    (
        "feature: {id: f}\nservices: [{id: r, dependencies: infrastructure.redis}]\n",
        "services[0].dependencies",
        "Expected array, got str",
    ),
    (
        "feature: {id: f}\nservices: [{id: r, dependencies: ['']}]\n",
        "services[0].dependencies[0]",
        "must not be empty",
    ),
    (
        "feature: {id: f}\nservices: [{id: r, entrypoint: 3}]\n",
        "services[0].entrypoint",
        "Expected str",
    ),
    ("feature: {id: f}\nservices: [{id: r}, {id: r}]\n", "services[1].id", "repeats services[0]"),
    ("feature: {id: f}\nservices: [{id: r.x}]\n", "services[0].id", "no dots"),
    (
        "feature: {id: f}\nservices: [{id: r, start_command: run}]\n",
        "services[0].start_command",
        "did you mean 'startCommand'",
    ),
    (
        "feature: {id: f}\nservices: [{id: r, dependancies: []}]\n",
        "services[0].dependancies",
        "did you mean 'dependencies'",
    ),
    ("feature: {id: f, Ports: {}}\n", "feature.Ports", "did you mean 'ports'"),
    ("feture: {id: f}\n", "feture", "did you mean 'feature'"),
    ("feature: {id: f, services: []}\n", "feature.services", "top level"),
    ("feature: {id: f}\nservices: [{id: r, 7: x}]\n", "services[0].7", "keys must be strings"),
]


@pytest.mark.parametrize(("text", "field", "words"), BAD)
def test_every_error_names_the_file_and_the_field(
    tmp_path: Path, text: str, field: str | None, words: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_services_file(path)
    error = caught.value
    assert error.context["file"] == str(path)
    assert error.context.get("field") == field
    assert str(path) in error.message
    if field is not None:
        assert f"{path}: {field}: " in error.message
    assert words in error.message


def test_an_unreadable_or_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_services_file(tmp_path / "missing" / "services.yaml")
    path = tmp_path / "services.yaml"
    path.write_bytes(b"feature: {id: \xff\xfe}\n")
    with pytest.raises(ConfigError, match="not UTF-8") as caught:
        load_services_file(path)
    assert caught.value.context["file"] == str(path)


def test_a_fifo_named_services_yaml_is_refused_without_blocking(tmp_path: Path) -> None:
    path = tmp_path / "services.yaml"
    os.mkfifo(path)
    with pytest.raises(ConfigError, match="not a regular file") as caught:
        load_services_file(path)
    assert caught.value.context["file"] == str(path)


def test_a_yaml_alias_bomb_is_rejected_before_it_is_walked(tmp_path: Path) -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    bomb = "\n".join(levels) + "\nfeature: {id: f, ports: *a8}\n"
    with pytest.raises(ConfigError, match="expands to more than"):
        load_services_file(write(tmp_path, bomb))


def test_absurd_nesting_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_services_file(write(tmp_path, "feature: " + "[" * 50_000 + "]" * 50_000 + "\n"))


def test_an_oversized_file_is_rejected_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services_file, "SERVICES_FILE_MAX_BYTES", 64)
    path = write(tmp_path, SEED)
    with pytest.raises(ConfigError, match="larger than 64 bytes") as caught:
        load_services_file(path)
    assert caught.value.context["file"] == str(path)


def test_keys_left_empty_mean_none(tmp_path: Path) -> None:
    bare = load_services_file(write(tmp_path, "feature:\n  id: f\n  ports:\nservices:\n"))
    assert (bare.ports, bare.services) == ({}, ())
    listed = load_services_file(
        write(tmp_path, "feature: {id: f}\nservices:\n  - id: r\n    dependencies:\n")
    )
    assert listed.services[0].dependencies == ()
