"""HFModelLoader: a tiny random causal LM; the real all-MiniLM-L6-v2 vs sentence-transformers."""

from __future__ import annotations

import re
import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlsup.errors import ConfigError, ModelLoadError
from mlsup.kit.loaders import HFModel, HFModelLoader
from mlsup.kit.loaders.hf import generation_kwargs
from mlsup.kit.loaders.torch_common import safetensors_bytes

SENTENCES = [
    "A man is eating food.",
    "A man is riding a horse.",
    "The new movie is awesome.",
    "GPUs are shared between many programs.",
]
MESSAGES = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def lm(causal_lm_path: Path) -> Any:
    loader = HFModelLoader()
    yield loader.load(causal_lm_path, device="cpu")
    loader.unload()


def test_generation_kwargs_mapping() -> None:
    kwargs, seed = generation_kwargs({"max_tokens": 5, "top_p": 0.5, "stop": "x"})
    assert kwargs == {"max_new_tokens": 5, "do_sample": False, "stop_strings": ["x"]}
    assert seed is None
    kwargs, seed = generation_kwargs({"temperature": 0.7, "top_k": 3, "seed": 4})
    assert kwargs["do_sample"] and kwargs["temperature"] == 0.7 and kwargs["top_k"] == 3
    assert seed == 4


def test_generate_is_greedy_deterministic_and_bounded(lm: HFModel, causal_lm_path: Path) -> None:
    assert lm.causal and lm.device == "cpu"
    text = lm.generate("The quick brown", max_tokens=8)
    assert isinstance(text, str) and text
    assert lm.generate("The quick brown", max_tokens=8) == text
    assert lm.complete("The quick brown", max_tokens=8) == text
    pieces = list(lm.generate("The quick brown", stream=True, max_tokens=8))
    assert 1 <= len(pieces) <= 8  # the streamer yields at most one piece per new token
    assert "".join(pieces) == text
    other = HFModelLoader()
    try:
        assert other.load(causal_lm_path).generate("The quick brown", max_tokens=8) == text
    finally:
        other.unload()


def test_sampling_with_a_seed_repeats(lm: HFModel) -> None:
    runs = {lm.generate("a", max_tokens=12, temperature=1.5, seed=s) for s in (7, 7, 8, 9, 10)}
    assert lm.generate("a", max_tokens=12, temperature=1.5, seed=7) in runs
    assert len(runs) >= 2  # different seeds give different samples


def test_chat_uses_the_template_and_streams(lm: HFModel) -> None:
    answer = lm.chat(MESSAGES, max_tokens=10)
    assert isinstance(answer, str) and answer
    pieces = list(lm.chat(MESSAGES, stream=True, max_tokens=10))
    assert len(pieces) >= 1 and "".join(pieces) == answer
    # The tiny tokenizer adds no special tokens itself: chat() is generation on the template.
    rendered = "<s>user: hello there</s>\n<s>assistant:"
    assert lm.generate(rendered, max_tokens=10) == answer
    assert lm.generate("user: hello there", max_tokens=10) != answer


def test_embed_of_a_causal_lm(lm: HFModel) -> None:
    emb = lm.embed(["one", "two words here"])
    assert emb.shape == (2, 32) and emb.dtype == np.float32
    np.testing.assert_allclose(lm.embed(["one"])[0], emb[0], rtol=1e-5, atol=1e-6)


def test_stream_errors_are_raised_not_truncated(lm: HFModel) -> None:
    with pytest.raises(ModelLoadError):
        list(lm.generate("x", stream=True, max_tokens=4, num_beams="many"))


def test_closing_a_stream_stops_the_generation(
    lm: HFModel, capsys: pytest.CaptureFixture[str]
) -> None:
    limit = 100_000  # minutes of decoding, were it not stopped
    pieces = lm.generate("The quick brown", stream=True, max_tokens=limit)
    assert isinstance(pieces, Generator)
    next(pieces)
    pieces.close()  # what the server does when the caller went away
    assert "mlsup-hf-generate" not in [t.name for t in threading.enumerate()]
    found = re.search(r"after (\d+) new tokens: the stream was closed", capsys.readouterr().err)
    assert found is not None and 1 <= int(found.group(1)) < limit
    # The model is free again, and deterministic as before.
    assert lm.generate("The quick brown", max_tokens=4) == lm.generate(
        "The quick brown", max_tokens=4
    )


def test_estimate_from_safetensors(causal_lm_path: Path) -> None:
    weights = safetensors_bytes(causal_lm_path)
    assert weights == safetensors_bytes(causal_lm_path, dtype="float32")
    assert safetensors_bytes(causal_lm_path, dtype="float16") == weights // 2
    loader = HFModelLoader()
    assert loader.estimate_vram(causal_lm_path, dtype="float32") > weights / (1 << 20)


def test_estimate_halves_weights_in_float16(minilm_path: Path) -> None:
    loader = HFModelLoader()
    f32 = loader.estimate_vram(minilm_path, dtype="float32")
    f16 = loader.estimate_vram(minilm_path, dtype="float16")
    weights_mb = safetensors_bytes(minilm_path) / (1 << 20)  # stored as float32
    assert f32 - f16 == pytest.approx(weights_mb / 2 * 1.2, abs=1)
    assert loader.estimate_vram(minilm_path) == f16  # "auto" sizes for a GPU: float16


def test_bad_options_and_paths(causal_lm_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="dtype"):
        HFModelLoader().load(causal_lm_path, dtype="float8")
    with pytest.raises(ModelLoadError, match="task"):
        HFModelLoader().load(causal_lm_path, task="translation")
    with pytest.raises(ModelLoadError) as info:
        HFModelLoader().load(tmp_path)  # an empty directory: no config.json
    assert info.value.context["path"] == str(tmp_path)


def test_minilm_matches_sentence_transformers(minilm_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    loader = HFModelLoader()
    model = loader.load(minilm_path, device="cpu")
    try:
        assert not model.causal
        assert model.pooling.modes == ("mean",) and model.pooling.normalize
        ours = model.embed(SENTENCES)
    finally:
        loader.unload()
    reference = SentenceTransformer(str(minilm_path), device="cpu").encode(SENTENCES)
    assert ours.shape == (4, 384) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=1e-5)
