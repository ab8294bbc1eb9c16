"""[queues.<name>] tables: defaults, every field, and errors naming file, queue and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tomllib

from mlsup import defaults
from mlsup.errors import ConfigError
from mlsup.kit.manifest import parse_manifest
from mlsup.queues.config import load_queues, model_operations, parse_queues, queue_prefix

MODELS = """
[models.chat]
loader = "gguf"
path = "m.gguf"

[models.emb]
loader = "hf"
path = "minilm"
options = { task = "embedding" }

[models.img]
loader = "diffusers"
path = "sd"
"""


def queues(text: str) -> dict[str, Any]:
    tables = tomllib.loads(MODELS + text)
    manifest = parse_manifest(tables, source="mlsup.toml", base_dir=Path("/srv"))
    return parse_queues(tables, manifest)


def test_defaults_and_every_field() -> None:
    parsed = queues("""
[queues.summaries]
model = "chat"
op = "chat"

[queues.vectors]
model = "emb"
op = "embed"
concurrency = 4
attempts = 5
backoff = { type = "fixed", delay = 250 }
model_wait_s = 2.5
lock_duration_ms = 5000
stalled_interval_ms = 1000
""")
    summaries, vectors = parsed["summaries"], parsed["vectors"]
    assert (summaries.model, summaries.op, summaries.concurrency) == ("chat", "chat", 1)
    assert summaries.attempts == defaults.QUEUE_ATTEMPTS
    assert summaries.job_backoff() == {"type": "exponential", "delay": defaults.QUEUE_BACKOFF_MS}
    assert summaries.operations == {"chat", "complete", "embed", "tokenize"}
    assert (vectors.concurrency, vectors.attempts, vectors.model_wait_s) == (4, 5, 2.5)
    assert vectors.job_backoff() == {"type": "fixed", "delay": 250}
    assert (vectors.lock_duration_ms, vectors.stalled_interval_ms) == (5000, 1000)
    assert vectors.operations == {"embed", "tokenize"}


def test_no_queues_is_empty() -> None:
    assert queues("") == {}


def test_backoff_as_a_number_is_exponential() -> None:
    parsed = queues('[queues.q]\nmodel = "chat"\nop = "chat"\nbackoff = 10\n')
    assert parsed["q"].job_backoff() == {"type": "exponential", "delay": 10}


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ('model = "nope"\nop = "chat"', "model", "no model 'nope'"),
        ('op = "chat"', "model", "is required"),
        ('model = "emb"\nop = "chat"', "op", "it offers embed, tokenize"),
        ('model = "img"\nop = "transcribe"', "op", "offers generate_image"),
        ('model = "chat"', "op", "None is not an operation"),
        ('model = "chat"\nop = "chat"\nconcurrency = 0', "concurrency", "positive integer"),
        ('model = "chat"\nop = "chat"\nattempts = true', "attempts", "positive integer"),
        ('model = "chat"\nop = "chat"\nbackoff = "x"', "backoff", "delay in ms"),
        ('model = "chat"\nop = "chat"\nbackoff = { type = "linear", delay = 1 }', "backoff", ""),
        ('model = "chat"\nop = "chat"\nmodel_wait_s = -1', "model_wait_s", ">= 0"),
        ('model = "chat"\nop = "chat"\ncolour = "red"', "colour", "unknown key"),
    ],
)
def test_errors_name_file_queue_and_field(body: str, field: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        queues(f"[queues.q]\n{body}\n")
    error = caught.value
    assert error.context == {"file": "mlsup.toml", "queue": "q", "field": field}
    assert str(error).startswith(f"mlsup.toml: [queues.q] {field}: ")
    assert words in str(error)


def test_queue_table_and_name_must_be_valid() -> None:
    with pytest.raises(ConfigError, match="must be a table"):
        queues("[queues]\nq = 3\n")
    with pytest.raises(ConfigError, match="without ':'"):
        queues('[queues."a:b"]\nmodel = "chat"\nop = "chat"\n')
    tables = {"queues": ["x"]}
    manifest = parse_manifest({}, source="f.toml", base_dir=Path("/"))
    with pytest.raises(ConfigError, match=r"f\.toml: queues must be a table"):
        parse_queues(tables, manifest)


def test_operations_of_loader_kinds() -> None:
    manifest = parse_manifest(
        tomllib.loads(MODELS + '[models.lm]\nloader = "hf"\npath = "lm"\n'),
        source="f", base_dir=Path("/"),
    )  # fmt: skip
    assert "generate" in model_operations(manifest.models["lm"])  # task auto: a causal LM may be
    assert model_operations(manifest.models["img"]) == {"generate_image"}


def test_prefix_and_loading_from_a_file(tmp_path: Path) -> None:
    assert queue_prefix("") == "bull"
    assert queue_prefix("team:") == "team:bull"
    path = tmp_path / "mlsup.toml"
    path.write_text(MODELS + '[queues.q]\nmodel = "chat"\nop = "complete"\n')
    manifest, parsed = load_queues(path)
    assert manifest.source == str(path) and parsed["q"].op == "complete"
    path.write_text("[queues\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_queues(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_queues(tmp_path / "missing.toml")
