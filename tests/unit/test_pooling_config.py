"""Reading sentence-transformers pooling configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlsup.errors import ModelLoadError
from mlsup.kit.loaders.pooling import PoolingConfig, read_pooling

ST_MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {
        "idx": 2,
        "name": "2",
        "path": "2_Normalize",
        "type": "sentence_transformers.models.Normalize",
    },
]


def test_plain_directory_means_mean_pooling(tmp_path: Path) -> None:
    assert read_pooling(tmp_path) == PoolingConfig(("mean",), normalize=False)


def test_sentence_transformers_layout(tmp_path: Path) -> None:
    (tmp_path / "modules.json").write_text(json.dumps(ST_MODULES))
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False})
    )
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128}))
    assert read_pooling(tmp_path) == PoolingConfig(("cls",), normalize=True, max_seq_length=128)


def test_pooling_without_modules_json_and_bad_files(tmp_path: Path) -> None:
    (tmp_path / "1_Pooling").mkdir()
    config = tmp_path / "1_Pooling" / "config.json"
    config.write_text(json.dumps({"pooling_mode_max_tokens": True}))
    assert read_pooling(tmp_path).modes == ("max",)
    config.write_text(json.dumps({"pooling_mode": "weird"}))
    with pytest.raises(ModelLoadError, match="weird"):
        read_pooling(tmp_path)
    config.write_text("{not json")
    with pytest.raises(ModelLoadError, match="cannot read"):
        read_pooling(tmp_path)
