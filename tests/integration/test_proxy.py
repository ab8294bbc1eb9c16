"""The proxy through a real supervisor: every method of every model kind, results identical to
in-process ones, concurrency, crashes during bursts and streams, deadlines, async."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mlsup
from mlsup.errors import MlsupError, RequestTimeout, SupervisorUnavailable, WorkerCrashed
from mlsup.ipc.shm import sweep_orphans
from mlsup.kit.loaders import (
    DiffusersLoader,
    GGUFModelLoader,
    HFModelLoader,
    ONNXLoader,
    WhisperLoader,
)
from mlsup.kit.loaders.whisper import SAMPLE_RATE
from mlsup.testing.loaders import ProbeModel
from mlsup.testing.redis import TestRedis
from mlsup.testing.tiny_models import (
    minilm_dir,
    smollm2_gguf,
    tiny_causal_lm,
    tiny_diffusion,
    tiny_onnx,
    tiny_whisper,
)

from .supervisor_helpers import RunningSupervisor, manifest

GREEDY = {"max_tokens": 12, "temperature": 0.0, "seed": 1}
IMAGE = {"steps": 2, "guidance": 5.0, "width": 32, "height": 32, "seed": 3}
WHISPER = {"max_new_tokens": 8, "beam_size": 1}
HI = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]

PROBE = """
[models.probe]
loader = "probe"
path = "probe.txt"
vram_mb = 100
idle_timeout_s = 0
"""


def tone(seconds: float = 1.5) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


@pytest.fixture(scope="module")
def models_toml() -> str:
    return f"""
[models.smollm2]
loader = "gguf"
path = "{smollm2_gguf()}"
vram_mb = 400
options = {{ n_ctx = 512, seed = 1 }}

[models.lm]
loader = "hf"
path = "{tiny_causal_lm()}"
vram_mb = 100
options = {{ device = "cpu" }}

[models.minilm]
loader = "hf"
path = "{minilm_dir()}"
vram_mb = 400
options = {{ task = "embedding" }}

[models.image]
loader = "diffusers"
path = "{tiny_diffusion()}"
vram_mb = 100
options = {{ device = "cpu" }}

[models.whisper]
loader = "whisper"
path = "{tiny_whisper()}"
vram_mb = 100
options = {{ device = "cpu" }}

[models.mlp]
loader = "onnx"
path = "{tiny_onnx()}"
vram_mb = 50
"""


@pytest.fixture
def running(tmp_path: Path, redis_server: TestRedis, redis_prefix: str) -> Any:
    started: list[RunningSupervisor] = []

    def start(models: str, memory_mb: int = 4000) -> RunningSupervisor:
        config = manifest(redis_server.url, redis_prefix, models, memory_mb=memory_mb)
        supervisor = RunningSupervisor(tmp_path, config).start()
        started.append(supervisor)
        return supervisor

    yield start
    for supervisor in started:
        supervisor.stop()
    sweep_orphans()


def test_every_method_of_every_kind_matches_in_process(running: Any, models_toml: str) -> None:
    supervisor = running(models_toml)
    with mlsup.connect(supervisor.runtime) as sup:
        smollm2, lm = sup.model("smollm2"), sup.model("lm")
        local_gguf = GGUFModelLoader().load(smollm2_gguf(), n_ctx=512, seed=1)
        assert smollm2.chat(HI, **GREEDY) == local_gguf.chat(HI, **GREEDY)
        assert "".join(smollm2.chat(HI, stream=True, **GREEDY)) == local_gguf.chat(HI, **GREEDY)
        assert smollm2.complete("The capital of France is", **GREEDY) == local_gguf.complete(
            "The capital of France is", **GREEDY
        )
        assert smollm2.tokenize("hello world") == local_gguf.tokenize("hello world")
        del local_gguf

        local_lm = HFModelLoader().load(tiny_causal_lm(), device="cpu")
        assert lm.generate("The quick brown", max_tokens=8) == local_lm.generate(
            "The quick brown", max_tokens=8
        )
        assert "".join(
            lm.generate("The quick brown", stream=True, max_tokens=8)
        ) == local_lm.generate("The quick brown", max_tokens=8)
        assert lm.chat(HI, max_tokens=8) == local_lm.chat(HI, max_tokens=8)

        sentences = ["a cat", "a kitten", "stock markets"]
        local_minilm = HFModelLoader().load(minilm_dir(), task="embedding")
        supervised = sup.model("minilm").embed(sentences)
        assert supervised.shape == (3, 384) and supervised.dtype == np.float32
        np.testing.assert_array_equal(supervised, local_minilm.embed(sentences))

        image = sup.model("image").generate_image("a red cube", **IMAGE)
        local_image = (
            DiffusersLoader()
            .load(tiny_diffusion(), device="cpu")
            .generate_image("a red cube", **IMAGE)
        )
        assert image.dtype == np.uint8 and image.shape == (32, 32, 3)
        np.testing.assert_array_equal(image, local_image)

        heard = sup.model("whisper").transcribe(tone(), **WHISPER)
        assert heard == WhisperLoader().load(tiny_whisper(), device="cpu").transcribe(
            tone(), **WHISPER
        )

        x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
        np.testing.assert_array_equal(
            sup.model("mlp").run({"x": x})["y"], ONNXLoader().load(tiny_onnx()).run({"x": x})["y"]
        )
        assert {row["state"] for row in sup.status()} == {"ready"}


def test_control_calls_and_priorities(running: Any) -> None:
    supervisor = running(PROBE)
    with mlsup.connect(supervisor.runtime) as sup:
        row = sup.load("probe", priority=mlsup.Priority.HIGH)
        assert row["state"] == "ready" and row["priority"] == "high"
        assert [lease["model_id"] for lease in sup.leases()] == ["probe"]
        assert sup.unload("probe")["state"] == "unloaded"
        assert sup.leases() == []
        assert sup.model("probe").embed(["x"]).shape == (1, 8)  # loads again on use


def test_sixteen_threads_and_four_processes_at_once(running: Any) -> None:
    supervisor = running(PROBE)
    code = (
        "import sys, numpy as np, mlsup\n"
        "from mlsup.testing.loaders import ProbeModel\n"
        "with mlsup.connect(sys.argv[1]) as sup:\n"
        "    m = sup.model('probe')\n"
        "    for i in range(30):\n"
        "        texts = [f'p{i}', 'shared']\n"
        "        assert np.array_equal(m.embed(texts), ProbeModel(8).embed(texts))\n"
        "        assert m.run({'i': i, 'x': np.full(50_000, i)})['i'] == i\n"
        "print('ok')\n"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(supervisor.runtime)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    errors: list[BaseException] = []
    with mlsup.connect(supervisor.runtime) as sup:
        model = sup.model("probe")

        def work(n: int) -> None:
            try:
                for i in range(20):
                    texts = [f"t{n}-{i}"]
                    np.testing.assert_array_equal(model.embed(texts), ProbeModel(8).embed(texts))
                    back = model.run({"n": n, "big": np.full(100_000, n, dtype=np.int32)})
                    assert back["n"] == n and int(back["big"][-1]) == n
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    outputs = [p.communicate(timeout=120)[0].strip() for p in processes]
    assert not errors, errors[:3]
    assert outputs == ["ok"] * 4 and all(p.returncode == 0 for p in processes)


def test_a_worker_killed_during_a_burst_fails_no_call_silently(running: Any) -> None:
    supervisor = running(PROBE)
    outcomes: list[object] = []
    stop = threading.Event()
    with mlsup.connect(supervisor.runtime) as sup:
        model = sup.model("probe", timeout=30)
        model.embed(["warm"])
        pid = supervisor.row("probe")["pid"]

        def burst() -> None:
            while not stop.is_set():
                try:
                    vectors = model.embed(["a", "b"])
                    outcomes.append("ok" if vectors.shape == (2, 8) else vectors)
                except MlsupError as exc:
                    outcomes.append(exc)

        threads = [threading.Thread(target=burst) for _ in range(6)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        os.kill(pid, signal.SIGKILL)
        time.sleep(2.0)
        stop.set()
        for thread in threads:
            thread.join(40)
        assert not any(thread.is_alive() for thread in threads), "a call hung"
    assert outcomes.count("ok") > 10
    strays = [o for o in outcomes if o != "ok"]
    assert all(isinstance(o, WorkerCrashed) for o in strays), strays  # typed, or retried
    assert supervisor.row("probe")["restarts"] == 1


def test_a_stream_cut_by_a_crash_raises_instead_of_ending(running: Any) -> None:
    supervisor = running(PROBE)
    with mlsup.connect(supervisor.runtime) as sup:
        model = sup.model("probe", timeout=30)
        pieces = model.complete("abcdefghijklmnopqrstuvwxyz", stream=True, delay_s=0.2)
        received = [next(pieces), next(pieces)]
        os.kill(supervisor.row("probe")["pid"], signal.SIGKILL)
        with pytest.raises(WorkerCrashed, match="SIGKILL"):
            received.extend(pieces)
        assert received[:2] == ["z", "y"] and len(received) < 26


def test_deadlines_are_honoured_for_slow_and_hung_workers(running: Any) -> None:
    supervisor = running(PROBE)
    with mlsup.connect(supervisor.runtime) as sup:
        sup.load("probe")  # loaded first: these deadlines are about the calls, not the load
        hasty = sup.model("probe", timeout=0.5)
        started = time.monotonic()
        with pytest.raises(RequestTimeout):
            hasty.complete("slow", delay_s=5)
        assert time.monotonic() - started < 3
        pid = supervisor.row("probe")["pid"]
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(RequestTimeout):
                hasty.embed(["hung"])
            assert time.monotonic() - started < 3
        finally:
            os.kill(pid, signal.SIGCONT)


async def test_the_async_proxy(running: Any) -> None:
    supervisor = running(PROBE)
    async with await mlsup.aconnect(supervisor.runtime) as sup:
        model = sup.model("probe", timeout=30)
        results = await asyncio.gather(*(model.embed([f"t{i}"]) for i in range(24)))
        for i, vectors in enumerate(results):
            np.testing.assert_array_equal(vectors, ProbeModel(8).embed([f"t{i}"]))
        assert [p async for p in await model.complete("abc", stream=True)] == ["c", "b", "a"]
        assert (await model.run({"x": np.arange(3)}))["x"].tolist() == [0, 1, 2]
        assert {row["model"] for row in await sup.status()} == {"probe"}
        pieces = await model.complete("abcdefghij", stream=True, delay_s=0.2)
        first = await pieces.__anext__()
        os.kill(supervisor.row("probe")["pid"], signal.SIGKILL)
        with pytest.raises(WorkerCrashed):
            async for _ in pieces:
                pass
        assert first == "j"
        assert (await model.embed(["after"])).shape == (1, 8)


def test_no_supervisor_says_how_to_start_one(tmp_path: Path) -> None:
    with pytest.raises(SupervisorUnavailable, match="mlsup start"):
        mlsup.connect(tmp_path / "nothing-here")
