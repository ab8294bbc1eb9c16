"""Does a long inference call let a heartbeat thread run? One long call per runtime in the main
thread while a thread ticks every 10 ms; prints the call's length, the ticks seen against the
ticks expected, and the longest silence between two ticks (what a supervisor watching
heartbeats would see). Run: ``python benchmarks/gil_heartbeat.py [llama torch ctranslate2]``.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

TICK_S = 0.01


def measure(name: str, call: Callable[[], object]) -> None:
    beats: list[float] = []
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            time.sleep(TICK_S)
            beats.append(time.monotonic())

    thread = threading.Thread(target=beat, daemon=True)
    started = time.monotonic()
    thread.start()
    call()
    elapsed = time.monotonic() - started
    stop.set()
    thread.join()
    stamps = [started, *beats]
    longest = max(b - a for a, b in zip(stamps, stamps[1:], strict=False))
    print(
        f"{name:<40} call {elapsed:6.2f} s  ticks {len(beats):5d}/{elapsed / TICK_S:5.0f}  "
        f"longest silence {longest * 1000:7.1f} ms",
        flush=True,
    )


def llama() -> None:
    from llama_cpp import Llama

    from mlsup.testing.tiny_models import smollm2_gguf

    model = Llama(model_path=str(smollm2_gguf()), n_ctx=1024, verbose=False, n_threads=2)
    prompt = "Write a long story about a lighthouse keeper. " * 20
    measure("llama.cpp prompt eval + 64 tokens", lambda: model(prompt, max_tokens=64))


def torch_() -> None:
    import torch

    torch.set_num_threads(2)
    a = torch.randn(3000, 3000)
    measure("torch one 3000x3000x3000 matmul x4", lambda: [a @ a for _ in range(4)])
    layer = torch.nn.TransformerEncoder(
        torch.nn.TransformerEncoderLayer(256, 4, batch_first=True), num_layers=6
    )
    x = torch.randn(8, 512, 256)
    with torch.no_grad():
        measure("torch 6-layer encoder forward x3", lambda: [layer(x) for _ in range(3)])


def ctranslate2() -> None:
    import numpy as np
    from faster_whisper import WhisperModel

    from mlsup.testing.tiny_models import tiny_whisper

    model = WhisperModel(str(tiny_whisper()), device="cpu", cpu_threads=2)
    audio = np.random.default_rng(0).standard_normal(16000 * 120).astype(np.float32) * 0.1

    def transcribe() -> None:
        segments, _ = model.transcribe(audio, beam_size=5, without_timestamps=True)
        for _ in segments:
            pass

    measure("ctranslate2 (faster-whisper) 120 s audio", transcribe)


def python_spin() -> None:
    measure("pure-Python loop (control: holds GIL)", lambda: sum(i * i for i in range(10**7)))


RUNS = {"llama": llama, "torch": torch_, "ctranslate2": ctranslate2, "python": python_spin}

if __name__ == "__main__":
    for name in sys.argv[1:] or list(RUNS):
        RUNS[name]()
