"""The registry: discovery under a root, duplicate features, lookups, the services root."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlsup.errors import ConfigError, ServiceNotFound
from mlsup.service.registry import Registry, find_services_files, services_root


def declare(directory: Path, feature: str, *services: str) -> Path:
    """Write directory/services.yaml declaring ``feature`` with services given as flow maps."""
    directory.mkdir(parents=True, exist_ok=True)
    body = "".join(f"  - {s}\n" for s in services)
    path = directory / "services.yaml"
    path.write_text(
        f"feature: {{id: {feature}}}\nservices:\n" + body,
        encoding="utf-8",
    )
    return path


def test_discovery_skips_virtualenvs_node_modules_and_vcs(tmp_path: Path) -> None:
    wanted = [
        declare(tmp_path / "alpha", "alpha"),
        declare(tmp_path / "beta" / "deep" / "er", "beta"),
    ]
    for skipped in (
        ".venv/lib/python3.11/site-packages/pkg",
        "venv",
        "alpha/node_modules/pkg",
        ".git",
        "beta/__pycache__",
    ):
        declare(tmp_path / skipped, "copy")
    # A virtualenv under any name is known by its pyvenv.cfg.
    (tmp_path / "env-311").mkdir()
    (tmp_path / "env-311" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    declare(tmp_path / "env-311" / "lib" / "pkg", "copy")
    # A symlink loop is not followed.
    (tmp_path / "alpha" / "loop").symlink_to(tmp_path)
    assert find_services_files(tmp_path) == sorted(wanted)
    registry = Registry.load_all(tmp_path)
    assert list(registry.features) == ["alpha", "beta"]
    assert registry.root == str(tmp_path)


def test_a_root_that_is_a_services_file_loads_just_that_file(tmp_path: Path) -> None:
    path = declare(tmp_path, "solo", "{id: api, port: 4100}")
    assert list(Registry.load_all(path).features) == ["solo"]


def test_a_missing_root_says_how_to_set_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MLSUP_SERVICES_ROOT") as caught:
        Registry.load_all(tmp_path / "nowhere")
    assert caught.value.context["root"] == str(tmp_path / "nowhere")


def test_two_files_declaring_one_feature_name_both(tmp_path: Path) -> None:
    first = declare(tmp_path / "a", "same")
    second = declare(tmp_path / "b", "same")
    with pytest.raises(ConfigError, match="declared twice") as caught:
        Registry.load_all(tmp_path)
    assert str(first) in caught.value.message and str(second) in caught.value.message
    assert caught.value.context["feature"] == "same"


def test_a_bad_file_fails_the_load_naming_it(tmp_path: Path) -> None:
    declare(tmp_path / "good", "good")
    bad = tmp_path / "bad" / "services.yaml"
    bad.parent.mkdir()
    bad.write_text("feature: {id: bad}\nservices: [{id: r, port: web}]\n")
    with pytest.raises(ConfigError) as caught:
        Registry.load_all(tmp_path)
    assert caught.value.context == {"file": str(bad), "field": "services[0].port"}


def test_lookups_ports_and_urls(tmp_path: Path) -> None:
    declare(
        tmp_path / "kv",
        "knowledge-verification",
        "{id: ml-runner, port: 41234}",
        "{id: worker}",
    )
    registry = Registry.load_all(tmp_path)
    feature = registry.get("knowledge-verification")
    assert [s.id for s in feature.services] == ["ml-runner", "worker"]
    assert registry.service("knowledge-verification", "ml-runner").port == 41234
    assert registry.port("knowledge-verification", "ml-runner") == 41234
    assert registry.url("knowledge-verification", "ml-runner") == "http://127.0.0.1:41234"
    assert [(f.id, s.id) for f, s in registry.services()] == [
        ("knowledge-verification", "ml-runner"),
        ("knowledge-verification", "worker"),
    ]
    with pytest.raises(ConfigError, match="declares no port") as no_port:
        registry.url("knowledge-verification", "worker")
    assert not isinstance(no_port.value, ServiceNotFound)


def test_unknown_ids_are_service_not_found_listing_what_exists(tmp_path: Path) -> None:
    declare(tmp_path / "kv", "kv", "{id: ml-runner, port: 41234}")
    registry = Registry.load_all(tmp_path)
    with pytest.raises(ServiceNotFound, match="known features: kv") as feature:
        registry.get("my-feature")
    assert feature.value.context["feature"] == "my-feature"
    with pytest.raises(ServiceNotFound, match="its services: ml-runner") as service:
        registry.url("kv", "api")
    assert service.value.context["service"] == "api"
    assert isinstance(service.value, ConfigError)


def test_the_root_comes_from_the_environment_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    declare(tmp_path / "from-env", "env-feature")
    config = tmp_path / "mlsup.toml"
    config.write_text('services_root = "elsewhere"\n')
    monkeypatch.setenv("MLSUP_CONFIG", str(config))
    monkeypatch.setenv("MLSUP_SERVICES_ROOT", str(tmp_path / "from-env"))
    assert services_root() == tmp_path / "from-env"
    assert list(Registry.load_all().features) == ["env-feature"]


def test_the_root_comes_from_mlsup_toml_relative_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLSUP_SERVICES_ROOT", raising=False)
    declare(tmp_path / "code" / "kv", "kv")
    config = tmp_path / "conf" / "mlsup.toml"
    config.parent.mkdir()
    config.write_text('services_root = "../code"\n[models]\n')
    monkeypatch.setenv("MLSUP_CONFIG", str(config))
    assert services_root().resolve() == (tmp_path / "code").resolve()
    assert list(Registry.load_all().features) == ["kv"]
    # Without MLSUP_CONFIG, ./mlsup.toml is read, as `mlsup start` does.
    monkeypatch.delenv("MLSUP_CONFIG")
    monkeypatch.chdir(config.parent)
    assert list(Registry.load_all().features) == ["kv"]


@pytest.mark.parametrize(
    ("toml", "words", "field"),
    [
        ("[models]\n", "has no services_root", "services_root"),
        ("services_root = 3\n", "must be a directory path string", "services_root"),
        ("services_root = \n", "not valid TOML", None),
    ],
)
def test_a_bad_or_absent_services_root_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toml: str, words: str, field: str | None
) -> None:
    monkeypatch.delenv("MLSUP_SERVICES_ROOT", raising=False)
    config = tmp_path / "mlsup.toml"
    config.write_text(toml)
    monkeypatch.setenv("MLSUP_CONFIG", str(config))
    with pytest.raises(ConfigError, match=words) as caught:
        services_root()
    assert caught.value.context["file"] == str(config)
    assert caught.value.context.get("field") == field


def test_no_configuration_at_all_names_every_way_to_give_a_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLSUP_SERVICES_ROOT", raising=False)
    monkeypatch.delenv("MLSUP_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        Registry.load_all()
    for way in ("MLSUP_SERVICES_ROOT", "services_root", "--root"):
        assert way in caught.value.message


def test_load_nearest_reads_the_file_above_a_runners_directory(tmp_path: Path) -> None:
    declare(tmp_path / "code" / "kv", "kv", "{id: ml-runner, port: 41234, entrypoint: ml-runner}")
    declare(tmp_path / "code" / "other", "other", "{id: x, port: bad}")  # never read
    runner = tmp_path / "code" / "kv" / "ml-runner" / "src"
    runner.mkdir(parents=True)
    registry = Registry.load_nearest(runner)
    assert list(registry.features) == ["kv"]
    assert registry.url("kv", "ml-runner") == "http://127.0.0.1:41234"
    assert registry.root == str(tmp_path / "code" / "kv")
    with pytest.raises(ConfigError, match=r"no services\.yaml in"):
        Registry.load_nearest(tmp_path)


def test_the_supervisors_manifest_accepts_services_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The seam with the manifest's schema: one mlsup.toml serves `mlsup start` and the registry."""
    from mlsup.kit.manifest import load_manifest

    monkeypatch.delenv("MLSUP_SERVICES_ROOT", raising=False)
    config = tmp_path / "mlsup.toml"
    config.write_text('services_root = "code"\n[models.m]\nloader = "gguf"\npath = "m.gguf"\n')
    assert list(load_manifest(config).models) == ["m"]
    assert services_root(config) == tmp_path / "code"
