"""GGUFModelLoader and ValidatedLlamaLoader with the packaged SmolLM2-135M-Instruct GGUF."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
import pytest
from gguf import GGUFReader

from mlsup.errors import ModelLoadError, ModelOOM
from mlsup.kit.loaders import GGUFModel, GGUFModelLoader, ValidatedLlamaLoader
from mlsup.kit.loaders.gguf_meta import estimate_gguf_mb, read_gguf_metadata

HI = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
GREEDY = {"max_tokens": 12, "temperature": 0.0, "seed": 1}


@pytest.fixture(scope="module")
def model(smollm2_path: Path) -> Any:
    loader = GGUFModelLoader()
    yield loader.load(smollm2_path, n_ctx=512, seed=1, embedding=False)
    loader.unload()


def test_metadata_matches_the_gguf_reference_reader(smollm2_path: Path) -> None:
    meta = read_gguf_metadata(smollm2_path)
    reader = GGUFReader(smollm2_path)

    def field(key: str) -> Any:
        return reader.fields[key].contents()

    arch = field("general.architecture")
    assert meta.architecture == arch == "llama"
    assert meta.n_layer == field(f"{arch}.block_count")
    assert meta.n_embd == field(f"{arch}.embedding_length")
    assert meta.n_head == field(f"{arch}.attention.head_count")
    assert meta.n_head_kv == field(f"{arch}.attention.head_count_kv")
    assert meta.n_vocab == len(field("tokenizer.ggml.tokens"))


def test_estimate_grows_with_context_and_layers(smollm2_path: Path) -> None:
    loader = GGUFModelLoader()
    meta = read_gguf_metadata(smollm2_path)
    small = loader.estimate_vram(smollm2_path, n_ctx=512)
    large = loader.estimate_vram(smollm2_path, n_ctx=8192)
    # KV cache: layers x ctx x kv heads x (k + v head dims) x 2 bytes (f16)
    kv_per_token = meta.n_layer * meta.n_head_kv * (meta.head_dim_k + meta.head_dim_v) * 2
    assert large - small == pytest.approx(kv_per_token * (8192 - 512) / (1 << 20), abs=2)
    assert small > meta.file_mb
    assert loader.estimate_vram(smollm2_path, n_ctx=512, n_gpu_layers=0) == 1  # nothing on GPU
    half = estimate_gguf_mb(meta, n_ctx=512, n_gpu_layers=meta.n_layer // 2)
    assert 0 < half < small


def test_chat_answers_and_is_deterministic(model: GGUFModel, smollm2_path: Path) -> None:
    answer = model.chat(HI, **GREEDY)
    assert isinstance(answer, str) and "paris" in answer.lower()
    assert model.chat(HI, **GREEDY) == answer
    other = GGUFModelLoader()
    try:
        again = other.load(smollm2_path, n_ctx=512, seed=1).chat(HI, **GREEDY)
    finally:
        other.unload()
    assert again == answer


def test_streaming_pieces_join_to_the_same_text(model: GGUFModel) -> None:
    pieces = list(model.chat(HI, stream=True, **GREEDY))
    assert len(pieces) > 1 and all(isinstance(p, str) for p in pieces)
    assert "".join(pieces) == model.chat(HI, **GREEDY)
    text = model.complete("The capital of France is", **GREEDY)
    assert "".join(model.complete("The capital of France is", stream=True, **GREEDY)) == text
    assert text.strip()


def test_tokenize(model: GGUFModel) -> None:
    ids = model.tokenize("Hello world")
    assert ids and all(isinstance(i, int) for i in ids)
    assert ids != model.tokenize("Goodbye world")


def test_embed_needs_the_option_then_gives_float32_rows(
    model: GGUFModel, smollm2_path: Path
) -> None:
    with pytest.raises(ModelLoadError, match="embedding = true"):
        model.embed(["a"])
    loader = GGUFModelLoader()
    try:
        emb = loader.load(smollm2_path, n_ctx=256, embedding=True).embed(["cat", "dog", "cat"])
    finally:
        loader.unload()
    meta = read_gguf_metadata(smollm2_path)
    assert emb.shape == (3, meta.n_embd) and emb.dtype == np.float32
    np.testing.assert_array_equal(emb[0], emb[2])
    assert not np.allclose(emb[0], emb[1])


def test_not_a_gguf_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGML" + bytes(64))
    with pytest.raises(ModelLoadError, match="not a GGUF file") as info:
        GGUFModelLoader().load(bad)
    assert info.value.context["path"] == str(bad)
    truncated = tmp_path / "trunc.gguf"
    truncated.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(4))
    with pytest.raises(ModelLoadError, match=str(truncated)):
        GGUFModelLoader().estimate_vram(truncated)


def test_validated_loader_on_cpu_reports_cpu(smollm2_path: Path) -> None:
    loader = ValidatedLlamaLoader(free_vram=lambda: None)
    model = loader.load(smollm2_path, n_ctx=256)
    try:
        assert isinstance(model, GGUFModel)
        assert loader.load_report is not None
        assert loader.load_report.device == "cpu"
        assert [a.n_gpu_layers for a in loader.load_report.attempts] == [0]
        assert model.chat(HI, **GREEDY)
    finally:
        loader.unload()


class OOMAboveLayers(ValidatedLlamaLoader):
    """Stands in for a GPU that runs out of memory above ``limit`` offloaded layers.

    This machine has no GPU; everything else (planning, the real llama.cpp load at the level
    that fits, the report) is real.
    """

    def __init__(self, limit: int, free_mb: int) -> None:
        super().__init__(free_vram=lambda: free_mb, margin_mb=0)
        self.limit = limit
        self.tried: list[int] = []

    def _offload_supported(self) -> bool:
        return True  # the simulated GPU

    def _load_llama(self, path: Path, options: Mapping[str, Any]) -> GGUFModel:
        self.tried.append(int(options["n_gpu_layers"]))
        if options["n_gpu_layers"] > self.limit:
            raise ModelOOM("CUDA out of memory (simulated GPU)")
        return super()._load_llama(path, options)


@pytest.mark.skipif(
    llama_cpp.llama_supports_gpu_offload(), reason="llama.cpp is a GPU build: see test_gpu_paths"
)
def test_validated_loader_ignores_free_vram_without_gpu_offload(smollm2_path: Path) -> None:
    # A CPU build of llama.cpp: whatever NVML says, layers stay on the CPU.
    loader = ValidatedLlamaLoader(free_vram=lambda: 80_000)
    try:
        loader.load(smollm2_path, n_ctx=256)
        assert loader.load_report is not None
        assert loader.load_report.device == "cpu" and loader.load_report.free_mb is None
    finally:
        loader.unload()


def test_validated_loader_falls_back_on_oom(smollm2_path: Path) -> None:
    meta = read_gguf_metadata(smollm2_path)
    loader = OOMAboveLayers(limit=meta.n_layer // 3, free_mb=100_000)
    try:
        loader.load(smollm2_path, n_ctx=256)
        report = loader.load_report
        assert report is not None
        expected = [meta.n_layer]
        while expected[-1] > loader.limit:
            expected.append(expected[-1] // 2)
        assert loader.tried == expected
        assert report.n_gpu_layers == expected[-1] and report.device == "cuda+cpu"
        assert [a.error is None for a in report.attempts] == [False] * (len(expected) - 1) + [True]
        assert report.estimate_mb == math.ceil(
            estimate_gguf_mb(meta, n_ctx=256, n_gpu_layers=report.n_gpu_layers)
        )
    finally:
        loader.unload()


def test_validated_loader_skips_levels_that_cannot_fit(smollm2_path: Path) -> None:
    meta = read_gguf_metadata(smollm2_path)
    full = estimate_gguf_mb(meta, n_ctx=256)
    loader = OOMAboveLayers(limit=meta.n_layer, free_mb=int(full) - 1)
    try:
        loader.load(smollm2_path, n_ctx=256)
        assert loader.tried[0] < meta.n_layer  # full offload was never attempted
    finally:
        loader.unload()
    cpu_oom = OOMAboveLayers(limit=-1, free_mb=100_000)
    with pytest.raises(ModelOOM):
        cpu_oom.load(smollm2_path, n_ctx=256)
    assert cpu_oom.tried[-1] == 0
