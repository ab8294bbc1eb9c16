"""transformers models: causal LMs (generate, chat, streaming) and sentence embeddings."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np

from mlsup.defaults import GENERATE_MAX_TOKENS
from mlsup.errors import ModelLoadError
from mlsup.kit.loaders.base import ModelLoader, backend_errors, import_runtime
from mlsup.kit.loaders.pooling import PoolingConfig, pool, read_pooling
from mlsup.kit.loaders.torch_common import (
    estimate_torch_mb,
    resolve_device,
    resolve_dtype,
    seeded,
)

__all__ = ["HFModel", "HFModelLoader", "generation_kwargs"]

Message = Mapping[str, Any]
_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def generation_kwargs(gen: Mapping[str, Any]) -> tuple[dict[str, Any], int | None]:
    """Map the OpenAI/llama.cpp-style keywords onto ``model.generate``'s; returns (kwargs, seed).

    ``max_tokens`` → ``max_new_tokens``; no ``temperature`` or 0 → greedy decoding
    (deterministic); ``stop`` → ``stop_strings``. Other keywords pass through unchanged.
    """
    kwargs = dict(gen)
    seed = kwargs.pop("seed", None)
    kwargs["max_new_tokens"] = int(kwargs.pop("max_tokens", GENERATE_MAX_TOKENS))
    temperature = kwargs.pop("temperature", None)
    if temperature:
        kwargs.update(do_sample=True, temperature=float(temperature))
    else:
        kwargs["do_sample"] = False
        for key in ("top_p", "top_k"):  # sampling knobs are meaningless when greedy
            kwargs.pop(key, None)
    stop = kwargs.pop("stop", None)
    if stop:
        kwargs["stop_strings"] = [stop] if isinstance(stop, str) else list(stop)
    return kwargs, None if seed is None else int(seed)


class HFModel:
    """A loaded transformers model. Results are ``str``, iterators of ``str``, or numpy arrays.

    Causal LMs offer :meth:`generate` (alias :meth:`complete`), :meth:`chat` and :meth:`embed`;
    encoders (sentence embedders) offer :meth:`embed`. Decoding is greedy unless a
    ``temperature`` is given; ``seed`` makes sampling reproducible.
    """

    def __init__(
        self, model: Any, tokenizer: Any, path: Path, *, causal: bool, pooling: PoolingConfig
    ) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self.path = path
        self.causal = causal
        self.pooling = pooling
        self.device = str(model.device)

    @overload
    def generate(self, prompt: str, stream: Literal[False] = ..., **gen: Any) -> str: ...
    @overload
    def generate(self, prompt: str, stream: Literal[True], **gen: Any) -> Iterator[str]: ...
    def generate(self, prompt: str, stream: bool = False, **gen: Any) -> str | Iterator[str]:
        """Continue ``prompt``; returns only the new text (or an iterator of its pieces)."""
        return self._generate(prompt, stream, add_special_tokens=True, gen=gen)

    complete = generate

    @overload
    def chat(self, messages: list[Message], stream: Literal[False] = ..., **gen: Any) -> str: ...
    @overload
    def chat(self, messages: list[Message], stream: Literal[True], **gen: Any) -> Iterator[str]: ...
    def chat(
        self, messages: list[Message], stream: bool = False, **gen: Any
    ) -> str | Iterator[str]:
        """Answer a conversation through the tokenizer's chat template."""
        if not getattr(self._tokenizer, "chat_template", None):
            raise ModelLoadError(
                f"{self.path} has no chat template; use generate() or add one to its tokenizer",
                path=str(self.path),
            )
        with backend_errors(self.path):
            prompt = self._tokenizer.apply_chat_template(
                [dict(m) for m in messages], tokenize=False, add_generation_prompt=True
            )
        # The template already holds the special tokens (BOS...): do not add them twice.
        return self._generate(prompt, stream, add_special_tokens=False, gen=gen)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Pooled embeddings, float32 ``(len(texts), dim)``, as the model's ST config says."""
        import torch

        with backend_errors(self.path), torch.inference_mode():
            batch = self._tokenizer(
                list(texts),
                padding=True,
                truncation=True,
                max_length=self.pooling.max_seq_length,
                return_tensors="pt",
            ).to(self._model.device)
            out = self._model(**batch, output_hidden_states=self.causal)
            states = out.hidden_states[-1] if self.causal else out.last_hidden_state
            pooled = pool(states.float(), batch["attention_mask"], self.pooling)
            return np.ascontiguousarray(pooled.cpu().numpy(), dtype=np.float32)

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text``, with the tokenizer's special tokens."""
        return [int(t) for t in self._tokenizer(text)["input_ids"]]

    def close(self) -> None:
        """Drop the references to the weights so that the loader can free them."""
        self._model = None

    def _generate(
        self, prompt: str, stream: bool, *, add_special_tokens: bool, gen: Mapping[str, Any]
    ) -> str | Iterator[str]:
        if not self.causal:
            raise ModelLoadError(f"{self.path} is not a causal LM", path=str(self.path))
        kwargs, seed = generation_kwargs(gen)
        if "stop_strings" in kwargs:
            kwargs["tokenizer"] = self._tokenizer
        with backend_errors(self.path):
            inputs = self._tokenizer(
                prompt, return_tensors="pt", add_special_tokens=add_special_tokens
            ).to(self._model.device)
        kwargs.update(inputs, pad_token_id=self._tokenizer.pad_token_id)
        if stream:
            return self._stream(kwargs, seed)
        with backend_errors(self.path), seeded(seed):
            output = self._model.generate(**kwargs)
        new = output[0, inputs["input_ids"].shape[1] :]
        return str(self._tokenizer.decode(new, skip_special_tokens=True))

    def _stream(self, kwargs: dict[str, Any], seed: int | None) -> Iterator[str]:
        """Generate in a thread, yielding its pieces. Closing the iterator (the server does when
        the caller went away) stops the generation at its next token and waits for it: the
        model serves one call at a time, and nobody reads the rest."""
        transformers = import_runtime("transformers", "hf")
        streamer = transformers.TextIteratorStreamer(
            self._tokenizer, skip_prompt=True, skip_special_tokens=True
        )
        cancel = _Cancel(transformers)
        kwargs["stopping_criteria"] = transformers.StoppingCriteriaList([cancel.criterion])
        failure: list[BaseException] = []

        def run() -> None:
            try:
                with seeded(seed):
                    self._model.generate(**kwargs, streamer=streamer)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer's thread
                failure.append(exc)
                streamer.end()

        thread = threading.Thread(target=run, name="mlsup-hf-generate", daemon=True)
        with backend_errors(self.path):
            thread.start()
            try:
                for piece in streamer:
                    if piece:
                        yield str(piece)
            except GeneratorExit:
                cancel.event.set()  # generate stops at its next token
                thread.join()
                print(
                    f"mlsup: stopped generating with {self.path.name} after {cancel.steps} new "
                    "tokens: the stream was closed",
                    file=sys.stderr,
                    flush=True,
                )
                raise
            thread.join()
            if failure:
                raise failure[0]


class _Cancel:
    """A stopping criterion for ``generate`` that stops it once :attr:`event` is set, and
    counts the decoding steps it was asked about (one per new token)."""

    def __init__(self, transformers: Any) -> None:
        self.event = threading.Event()
        self.steps = 0
        cancel = self

        class Cancelled(transformers.StoppingCriteria):  # type: ignore[misc]
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                import torch

                cancel.steps += 1
                stop = cancel.event.is_set()
                return torch.full(
                    (input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device
                )

        self.criterion = Cancelled()


class HFModelLoader(ModelLoader):
    """Loads a transformers model directory (config, weights, tokenizer).

    Options: ``task`` (``auto``: a causal LM when the config's architecture is one, else an
    encoder for embeddings; or ``causal-lm`` / ``embedding``), ``dtype`` (``auto``, float32,
    float16, bfloat16), ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:1``...). Files are read
    locally only: nothing is downloaded.
    """

    name = "hf"
    extra = "hf"

    def _estimate_mb(self, path: Path, options: Mapping[str, Any]) -> float:
        return estimate_torch_mb(path, dtype=str(options.get("dtype", "auto")))

    def _load(self, path: Path, options: Mapping[str, Any]) -> HFModel:
        if not path.is_dir():
            raise ModelLoadError(f"{path} must be a transformers model directory", path=str(path))
        torch = import_runtime("torch", self.extra)
        transformers = import_runtime("transformers", self.extra)
        device = resolve_device(str(options.get("device", "auto")), torch)
        dtype = resolve_dtype(str(options.get("dtype", "auto")), device, torch)
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
        causal = _is_causal(config, str(options.get("task", "auto")))
        auto = transformers.AutoModelForCausalLM if causal else transformers.AutoModel
        model = auto.from_pretrained(path, dtype=dtype, local_files_only=True).to(device).eval()
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        if tokenizer.pad_token is None:  # batching (embed) needs one; EOS is the usual choice
            tokenizer.pad_token = tokenizer.eos_token
        return HFModel(model, tokenizer, path, causal=causal, pooling=read_pooling(path))


def _is_causal(config: Any, task: str) -> bool:
    if task in ("causal-lm", "embedding"):
        return task == "causal-lm"
    if task != "auto":
        raise ModelLoadError(f"task {task!r} is not one of auto, causal-lm, embedding")
    architectures = getattr(config, "architectures", None) or []
    return any(a.endswith(_CAUSAL_SUFFIXES) for a in architectures)
