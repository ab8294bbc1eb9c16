"""The manifest: parsing, path resolution, validation errors that name file/model/field."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import msgpack
import pytest

from mlsup.errors import ConfigError, ModelNotFound
from mlsup.kit.manifest import ModelSpec, load_manifest, parse_manifest

GOOD = """
models_dir = "models"

[redis]
url = "redis://127.0.0.1:6379/0"
prefix = "t:"

[[devices]]
index = 0
memory_mb = 24000
simulated = true

[models.smollm2]
loader = "gguf"
path = "SmolLM2.gguf"
vram_mb = 600
priority = "high"
idle_timeout_s = 30
preload = true
options = { n_ctx = 2048, stop = ["</s>"] }

[models.abs]
loader = "onnx"
path = "~/x.onnx"
"""


def write(tmp_path: Path, text: str) -> Path:
    file = tmp_path / "mlsup.toml"
    file.write_text(text)
    return file


def test_parses_every_field_and_resolves_paths(tmp_path: Path) -> None:
    manifest = load_manifest(write(tmp_path, GOOD))
    assert manifest.models_dir == (tmp_path / "models").resolve()
    assert manifest.redis.url == "redis://127.0.0.1:6379/0"
    assert manifest.redis.prefix == "t:"
    assert manifest.devices == ({"index": 0, "memory_mb": 24000, "simulated": True},)
    spec = manifest.model("smollm2")
    assert spec.path == str((tmp_path / "models" / "SmolLM2.gguf").resolve())
    assert (spec.loader, spec.vram_mb, spec.priority) == ("gguf", 600, "high")
    assert (spec.idle_timeout_s, spec.preload) == (30.0, True)
    assert spec.options == {"n_ctx": 2048, "stop": ["</s>"]}
    other = manifest.model("abs")
    assert other.path == str(Path("~/x.onnx").expanduser())
    assert (other.priority, other.vram_mb, other.preload) == ("normal", None, False)


def test_spec_round_trips_through_msgpack(tmp_path: Path) -> None:
    spec = load_manifest(write(tmp_path, GOOD)).model("smollm2")
    wire = msgpack.unpackb(msgpack.packb(spec.to_dict()))
    assert ModelSpec.from_dict(wire) == spec


def test_from_dict_rejects_a_relative_path_and_a_bad_field() -> None:
    base = {"id": "m", "loader": "onnx", "path": "/abs/m.onnx"}
    assert ModelSpec.from_dict(base).path == "/abs/m.onnx"
    with pytest.raises(ConfigError, match="absolute"):
        ModelSpec.from_dict({**base, "path": "rel.onnx"})
    with pytest.raises(ConfigError) as info:
        ModelSpec.from_dict({**base, "priority": "urgent"})
    assert info.value.context["field"] == "priority"


@pytest.mark.parametrize(
    ("model_table", "field", "words"),
    [
        ('loader = "gguf"', "path", "required"),
        ('path = "m.gguf"', "loader", "required"),
        ('loader = "nope"\npath = "m"', "loader", "known loaders: gguf"),
        ('loader = "gguf"\npath = "m"\nvram_mb = -5', "vram_mb", "positive"),
        ('loader = "gguf"\npath = "m"\nvram_mb = true', "vram_mb", "positive"),
        ('loader = "gguf"\npath = "m"\npriority = "urgent"', "priority", "low, normal"),
        ('loader = "gguf"\npath = "m"\nidle_timeout_s = "5m"', "idle_timeout_s", "number"),
        ('loader = "gguf"\npath = "m"\npreload = 1', "preload", "true or false"),
        ('loader = "gguf"\npath = "m"\nvram_gb = 1', "vram_gb", "unknown key"),
        ('loader = "gguf"\npath = "m"\noptions = 3', "options", "table"),
        ('loader = "gguf"\npath = "m"\noptions = { when = 1979-05-27 }', "options", "date"),
    ],
)
def test_errors_name_file_model_and_field(
    tmp_path: Path, model_table: str, field: str, words: str
) -> None:
    file = write(tmp_path, f"[models.m1]\n{model_table}\n")
    with pytest.raises(ConfigError) as info:
        load_manifest(file)
    err = info.value
    assert err.context == {"file": str(file), "model": "m1", "field": field}
    assert words in str(err)
    assert str(file) in str(err) and "[models.m1]" in str(err)


def test_top_level_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load_manifest(write(tmp_path, "models_dir = "))
    assert info.value.context["file"].endswith("mlsup.toml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_manifest(tmp_path / "absent.toml")
    with pytest.raises(ConfigError) as info:
        load_manifest(write(tmp_path, "devices = 3"))
    assert info.value.context["field"] == "devices"
    with pytest.raises(ConfigError) as info:
        load_manifest(write(tmp_path, "[redis]\nurl = 6379"))
    assert info.value.context["field"] == "redis.url"


def test_unknown_model_lists_the_known_ones(tmp_path: Path) -> None:
    manifest = load_manifest(write(tmp_path, GOOD))
    with pytest.raises(ModelNotFound, match="known models: abs, smollm2"):
        manifest.model("qwen")


def test_config_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLSUP_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="MLSUP_CONFIG"):
        load_manifest()
    monkeypatch.setenv("MLSUP_CONFIG", str(write(tmp_path, GOOD)))
    assert set(load_manifest().models) == {"smollm2", "abs"}


def test_parse_manifest_defaults_models_dir_to_base_dir(tmp_path: Path) -> None:
    manifest = parse_manifest(
        {"models": {"m": {"loader": "hf", "path": "d"}}}, source="x", base_dir=tmp_path
    )
    assert manifest.models_dir == tmp_path.resolve()
    assert manifest.model("m").path == str(tmp_path.resolve() / "d")
    assert manifest.redis.url is None and manifest.devices == ()


def test_plain_data_check_is_not_fooled_by_nesting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="date"):
        parse_manifest(
            {
                "models": {
                    "m": {
                        "loader": "hf",
                        "path": "d",
                        "options": {"a": [{"b": dt.date(2020, 1, 1)}]},
                    }
                }
            },
            source="x",
            base_dir=tmp_path,
        )


def test_the_outward_layers_tables_are_kept_for_their_owners(tmp_path: Path) -> None:
    text = 'services_root = "~/services"\n' + GOOD + '\n[http]\nlisten = "127.0.0.1:8000"\n'
    text += '[queues.embed]\nmodel = "abs"\nconcurrency = 2\n'
    manifest = load_manifest(write(tmp_path, text))
    assert manifest.http == {"listen": "127.0.0.1:8000"}
    assert manifest.queues == {"embed": {"model": "abs", "concurrency": 2}}
    assert manifest.services_root == "~/services"
    plain = load_manifest(write(tmp_path, GOOD))
    assert (plain.http, plain.queues, plain.services_root) == (None, None, None)


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("modles_dir = 'x'", "modles_dir", "unknown key; the file takes devices, http"),
        ("[redis]\nurll = 'x'", "redis.urll", "unknown key"),
        ("http = 3", "http", "[http] table"),
        ("[queues]\nq = 3", "queues", "[queues.<name>] tables"),
        ("services_root = 3", "services_root", "must be a string"),
        ("[supervisor]\nheartbeat_s = 0", "supervisor.heartbeat_s", "positive"),
        ("[supervisor]\nrestart_max_crashes = 1.5", "supervisor.restart_max_crashes", "integer"),
        (
            "[supervisor]\nnope = 1",
            "supervisor.nope",
            "[supervisor] takes heartbeat_misses, heartbeat_s",
        ),
        ("[supervisor]\nmax_message_bytes = 10", "supervisor.max_message_bytes", "≥ 1024 (bytes)"),
    ],
)
def test_every_key_of_the_file_is_checked(
    tmp_path: Path, text: str, field: str, words: str
) -> None:
    from mlsup.supervisor.config import SupervisorSettings

    file = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        manifest = load_manifest(file)
        SupervisorSettings.parse(manifest.supervisor, manifest.source)
    assert info.value.context == {"file": str(file), "field": field}
    assert words in str(info.value) and str(file) in str(info.value)
