"""Sentence-embedding pooling, configured the way sentence-transformers saves a model.

A sentence-transformers directory lists its modules in ``modules.json`` (Transformer, then
``1_Pooling`` with ``config.json``, optionally ``2_Normalize``). :func:`read_pooling` turns that
into a :class:`PoolingConfig`; without it, mean pooling and no normalization (the common
default). :func:`pool` applies it to a batch of token states with their attention mask.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlsup.errors import ModelLoadError

__all__ = ["PoolingConfig", "pool", "read_pooling"]

# sentence-transformers' pooling flags, in the order it concatenates them.
_MODES = ("cls", "max", "mean", "mean_sqrt_len", "lasttoken")
_FLAG_OF = {
    "cls": "pooling_mode_cls_token",
    "max": "pooling_mode_max_tokens",
    "mean": "pooling_mode_mean_tokens",
    "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens",
    "lasttoken": "pooling_mode_lasttoken",
}
_NORMALIZE = "sentence_transformers.models.Normalize"
_POOLING = "sentence_transformers.models.Pooling"


@dataclass(frozen=True)
class PoolingConfig:
    """How token states become one vector: modes (concatenated) and L2 normalization."""

    modes: tuple[str, ...] = ("mean",)
    normalize: bool = False
    max_seq_length: int | None = None


def read_pooling(model_dir: Path) -> PoolingConfig:
    """The pooling a sentence-transformers directory asks for; mean pooling when there is none."""
    modules = _read_json(model_dir / "modules.json", default=[])
    pooling_dir = next(
        (m.get("path", "") for m in modules if m.get("type") == _POOLING), "1_Pooling"
    )
    normalize = any(m.get("type") == _NORMALIZE for m in modules)
    config = _read_json(model_dir / pooling_dir / "config.json", default={})
    st_config = _read_json(model_dir / "sentence_bert_config.json", default={})
    max_len = st_config.get("max_seq_length")
    if isinstance(config.get("pooling_mode"), str):  # newer single-key form
        modes: tuple[str, ...] = (config["pooling_mode"],)
    else:
        modes = tuple(m for m in _MODES if config.get(_FLAG_OF[m]))
    unknown = [m for m in modes if m not in _MODES]
    if unknown:
        raise ModelLoadError(
            f"unsupported pooling mode {unknown[0]!r} in {model_dir / pooling_dir}",
            path=str(model_dir),
        )
    return PoolingConfig(
        modes=modes or ("mean",),
        normalize=normalize,
        max_seq_length=int(max_len) if isinstance(max_len, int) else None,
    )


def _read_json(path: Path, *, default: Any) -> Any:
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}", path=str(path)) from exc


def pool(states: Any, mask: Any, config: PoolingConfig) -> Any:
    """Pool ``states`` (batch, tokens, dim) over the tokens that ``mask`` (batch, tokens) keeps."""
    import torch

    mask_f = mask.unsqueeze(-1).to(states.dtype)
    counts = mask_f.sum(dim=1).clamp(min=1e-9)
    parts = []
    for mode in config.modes:
        if mode == "cls":
            parts.append(states[:, 0])
        elif mode == "max":
            parts.append(states.masked_fill(mask_f == 0, float("-inf")).max(dim=1).values)
        elif mode == "mean":
            parts.append((states * mask_f).sum(dim=1) / counts)
        elif mode == "mean_sqrt_len":
            parts.append((states * mask_f).sum(dim=1) / counts.sqrt())
        else:  # lasttoken: the last kept token of each row (right padding)
            last = mask.sum(dim=1).long() - 1
            parts.append(states[torch.arange(states.shape[0]), last])
    pooled = torch.cat(parts, dim=-1)
    if config.normalize:
        pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
    return pooled
