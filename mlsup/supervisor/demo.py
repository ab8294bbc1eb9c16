"""``mlsup demo``: the supervisor serving real models, a worker killed and respawned.

It writes a manifest for the two real models packaged on PyPI (SmolLM2-135M-Instruct as GGUF,
all-MiniLM-L6-v2 as safetensors), starts ``mlsup start`` on a private runtime directory with
an embedded Redis, and uses it as a feature would.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from mlsup.errors import WorkerCrashed
from mlsup.ipc.liveness import process_alive
from mlsup.proxy import SupervisorProxy
from mlsup.supervisor.cli import show
from mlsup.supervisor.render import plain_rows, status_table

__all__ = ["run_demo"]

MANIFEST = """\
# Written by `mlsup demo`. No [redis] table: the supervisor starts an embedded Redis.
[models.smollm2]
loader = "gguf"
path = "{gguf}"
priority = "normal"
options = {{ n_ctx = 1024, seed = 0 }}

[models.minilm]
loader = "hf"
path = "{minilm}"
options = {{ task = "embedding" }}
"""


def _step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _show_status(sup: SupervisorProxy) -> None:
    show(status_table(plain_rows(sup.status())))


def _embeddings(sup: SupervisorProxy) -> None:
    _step("embeddings: sup.model('minilm').embed([...])")
    sentences = ["A cat sits on the mat.", "A kitten rests on a rug.", "Stocks fell today."]
    started = time.monotonic()
    vectors = sup.model("minilm").embed(sentences)
    elapsed = time.monotonic() - started
    print(f"{vectors.shape} {vectors.dtype} in {elapsed:.2f} s (first call: lease + spawn + load)")
    similarity = vectors @ vectors.T
    for i, sentence in enumerate(sentences[1:], start=1):
        print(f"  cos({sentences[0]!r}, {sentence!r}) = {similarity[0, i]:.3f}")
    assert np.argmax(similarity[0, 1:]) == 0, "the kitten should be closer than the stocks"


def _chat_and_crash(sup: SupervisorProxy) -> None:
    _step("chat: sup.model('smollm2').chat(messages, max_tokens=24)")
    chat = sup.model("smollm2")
    question = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    started = time.monotonic()
    answer = chat.chat(question, max_tokens=24, temperature=0.0)
    print(
        f"  {answer.strip()!r}  ({time.monotonic() - started:.2f} s, first call includes the load)"
    )

    _step("mlsup status")
    _show_status(sup)

    row = next(r for r in sup.status() if r["model"] == "smollm2")
    _step(f"kill -9 {row['pid']}   (the smollm2 worker, during a long answer)")
    killer = threading.Timer(0.3, os.kill, (row["pid"], signal.SIGKILL))
    killer.start()
    try:
        chat.chat([{"role": "user", "content": "Tell me a long story."}], max_tokens=400)
        print("  (the answer finished before the kill)")
    except WorkerCrashed as exc:
        print(f"  the caller gets {type(exc).__name__}: {exc.message}")
    killer.join()
    started = time.monotonic()
    answer = chat.chat(question, max_tokens=24, temperature=0.0)
    elapsed = time.monotonic() - started
    print(
        f"  the next call is served by the respawned worker ({elapsed:.2f} s): {answer.strip()!r}"
    )
    _show_status(sup)


def run_demo() -> int:
    """The demo; returns the exit status."""
    from mlsup.testing.supervisor import RunningSupervisor
    from mlsup.testing.tiny_models import minilm_dir, smollm2_gguf

    with tempfile.TemporaryDirectory(prefix="mlsup-demo-") as tmp:
        config = MANIFEST.format(gguf=smollm2_gguf(), minilm=minilm_dir())
        supervisor = RunningSupervisor(Path(tmp), config, name="demo")
        _step(
            f"mlsup start --config {supervisor.config}   "
            f"(embedded Redis, runtime dir {supervisor.runtime})"
        )
        started = time.monotonic()
        supervisor.start()
        print(f"supervisor pid {supervisor.pid} ready in {time.monotonic() - started:.1f} s")
        try:
            with supervisor.client(timeout=30) as sup:
                _embeddings(sup)
                _chat_and_crash(sup)
                workers = [r["pid"] for r in sup.status() if r["pid"]]
            _step("mlsup stop")
            code = supervisor.stop()
            left = [pid for pid in workers if process_alive(pid)] or "none"
            print(f"supervisor exited with {code}; workers left running: {left}")
        finally:
            supervisor.stop()  # after a failure above; nothing to do once stopped
    return 0
