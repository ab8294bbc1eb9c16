"""The test-only ``probe`` loader exists only where the test harness names it."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import tomllib

from mlsup.errors import ConfigError
from mlsup.kit.loaders import registry
from mlsup.kit.loaders.registry import LOADERS_ENV, get_loader, loader_names, register_loader
from mlsup.kit.manifest import parse_manifest
from mlsup.testing.loaders import PROBE_TARGET, ProbeLoader, register_probe

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def user_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A user's process: no $MLSUP_LOADERS, and no ``probe`` entry point installed.

    A virtual environment installed before the entry point was removed from pyproject.toml
    still lists it in its metadata until reinstalled; that stale entry is hidden here so that
    the registry's logic is what is tested.
    """
    monkeypatch.delenv(LOADERS_ENV, raising=False)
    real = metadata.entry_points

    def installed(**selection: Any) -> Any:
        found = real(**selection)
        return [ep for ep in found if ep.value != PROBE_TARGET]

    monkeypatch.setattr(registry, "entry_points", installed)
    yield


def test_pyproject_installs_no_probe_entry_point() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    loaders = project.get("entry-points", {}).get(registry.ENTRY_POINT_GROUP, {})
    assert PROBE_TARGET not in loaders.values() and "probe" not in loaders


@pytest.mark.usefixtures("user_environment")
def test_a_user_cannot_name_the_probe_loader(tmp_path: Path) -> None:
    assert "probe" not in loader_names()
    with pytest.raises(ConfigError, match="unknown loader 'probe'; known loaders: gguf"):
        get_loader("probe")
    manifest = {"models": {"flaky": {"loader": "probe", "path": "probe.txt"}}}
    with pytest.raises(ConfigError, match="unknown loader 'probe'"):
        parse_manifest(manifest, source="mlsup.toml", base_dir=tmp_path)


@pytest.mark.usefixtures("user_environment")
def test_register_probe_names_it_for_this_process_and_its_children(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    environ: dict[str, str] = {}
    register_probe(environ)
    register_probe(environ)  # twice: still one entry
    assert environ == {LOADERS_ENV: f"probe={PROBE_TARGET}"}
    monkeypatch.setenv(LOADERS_ENV, environ[LOADERS_ENV])
    assert get_loader("probe") is ProbeLoader
    assert loader_names()[-1] == "probe"


@pytest.mark.usefixtures("user_environment")
def test_registered_names_add_to_earlier_ones_and_never_shadow_built_ins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    environ = {LOADERS_ENV: "mine=mlsup.kit.loaders.onnx:ONNXLoader"}
    register_probe(environ)
    register_loader("gguf", PROBE_TARGET, environ)
    monkeypatch.setenv(LOADERS_ENV, environ[LOADERS_ENV])
    assert get_loader("mine").name == "onnx" and get_loader("probe") is ProbeLoader
    assert get_loader("gguf").__name__ == "GGUFModelLoader"


@pytest.mark.usefixtures("user_environment")
@pytest.mark.parametrize("value", ["probe", "probe=", "=a:B", "probe=module", "probe=module:"])
def test_a_malformed_environment_entry_is_named(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(LOADERS_ENV, value)
    with pytest.raises(ConfigError, match=f"{LOADERS_ENV} entry .* is not NAME=module:Class"):
        loader_names()


@pytest.mark.usefixtures("user_environment")
def test_a_built_in_or_environment_name_is_known_without_reading_installed_packages(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def unread(**selection: Any) -> Any:
        raise AssertionError("the entry points were scanned")

    monkeypatch.setattr(registry, "entry_points", unread)
    monkeypatch.setenv(LOADERS_ENV, f"probe={PROBE_TARGET}")
    assert registry.is_loader("hf") and registry.is_loader("probe")
    manifest = {"models": {"m": {"loader": "onnx", "path": "m.onnx"}}}
    assert parse_manifest(manifest, source="mlsup.toml", base_dir=tmp_path).models["m"]
    # A name neither built in nor in the environment is looked up among the entry points.
    with pytest.raises(AssertionError, match="scanned"):
        registry.is_loader("elsewhere")


@pytest.mark.usefixtures("user_environment")
def test_is_loader_answers_unknown_names_and_names_a_malformed_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert not registry.is_loader("nonesuch")
    monkeypatch.setenv(LOADERS_ENV, "probe=module")
    with pytest.raises(ConfigError, match=f"{LOADERS_ENV} entry .* is not NAME=module:Class"):
        registry.is_loader("hf")
