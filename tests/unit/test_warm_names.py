"""What the template resolves for a model, from its config files; hostile names are dropped."""

from __future__ import annotations

import json
from pathlib import Path

from mlsup.supervisor.template import ALWAYS_PRELOAD, preload_modules
from mlsup.supervisor.template_warm import warm
from mlsup.supervisor.warm_names import warm_names


def _write(root: Path, name: str, data: object) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(json.dumps(data), encoding="utf-8")


def test_hf_names_come_from_architectures_and_the_tokenizer_class(tmp_path: Path) -> None:
    _write(tmp_path, "config.json", {"architectures": ["BertModel"], "model_type": "bert"})
    _write(tmp_path, "tokenizer_config.json", {"tokenizer_class": "BertTokenizer"})
    names = warm_names([("hf", str(tmp_path))])
    assert "transformers:AutoModel" in names and "transformers:AutoTokenizer" in names
    assert names[-3:] == [
        "transformers:BertModel",
        "transformers:BertTokenizer",
        "transformers:BertTokenizerFast",
    ]


def test_diffusers_names_come_from_the_pipeline_and_its_components(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "model_index.json",
        {
            "_class_name": "StableDiffusionPipeline",
            "unet": ["diffusers", "UNet2DConditionModel"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "safety_checker": [None, None],
            "custom": ["my_package", "Evil"],
        },
    )
    names = warm_names([("diffusers", str(tmp_path))])
    assert "diffusers:StableDiffusionPipeline" in names
    assert "diffusers:UNet2DConditionModel" in names and "transformers:CLIPTextModel" in names
    assert not any(n.startswith("my_package") for n in names)


def test_models_sharing_classes_list_them_once_and_other_loaders_none(tmp_path: Path) -> None:
    for sub in ("a", "b"):
        _write(tmp_path / sub, "config.json", {"architectures": ["GPT2LMHeadModel"]})
    names = warm_names(
        [("hf", str(tmp_path / "a")), ("hf", str(tmp_path / "b")), ("gguf", "/nowhere")]
    )
    assert len(names) == len(set(names)) and names.count("transformers:GPT2LMHeadModel") == 1
    assert warm_names([("gguf", "/x.gguf"), ("onnx", "/y.onnx")]) == []


def test_missing_malformed_or_hostile_config_files_yield_only_the_loaders_names(
    tmp_path: Path,
) -> None:
    (tmp_path / "config.json").write_text("{not json", encoding="utf-8")
    base = warm_names([("hf", str(tmp_path / "missing"))])
    assert warm_names([("hf", str(tmp_path))]) == base
    _write(tmp_path, "config.json", {"architectures": ["os.system", "a b", 3, "__import__('os')"]})
    _write(tmp_path, "tokenizer_config.json", {"tokenizer_class": ["list"]})
    assert warm_names([("hf", str(tmp_path))]) == base
    _write(tmp_path, "config.json", ["not", "a", "mapping"])
    assert warm_names([("hf", str(tmp_path))]) == base


def test_warm_resolves_only_the_allowed_packages_and_skips_what_fails() -> None:
    assert warm(["os:system", "subprocess:", "json:loads", "mlsup:connect"]) == []
    assert warm(["transformers:NoSuchClassAnywhere", "transformers.no_such_module:"]) == []
    assert warm(["transformers:AutoConfig"]) == ["transformers:AutoConfig"]


def test_warming_transformers_builds_its_conversion_table_for_every_fork() -> None:
    import transformers.conversion_mapping as mapping

    warm(["transformers:AutoConfig"])
    assert mapping._checkpoint_conversion_mapping_cache  # built once, inherited by workers


def test_the_class_warm_up_is_the_templates_last_import() -> None:
    modules = preload_modules(["hf", "gguf", "hf"])
    assert modules[: len(ALWAYS_PRELOAD)] == list(ALWAYS_PRELOAD)
    assert modules[-1] == "mlsup.supervisor.template_warm"
    assert modules.count("torch") == 1 and "llama_cpp" in modules
