"""The OpenAI-compatible gateway as users meet it: `mlsup start` with an [http] table, the
official openai SDK and raw httpx, real models (SmolLM2, MiniLM, tiny whisper and diffusion),
one supervisor for the whole module."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

import mlsup
from mlsup.ipc.shm import sweep_orphans
from mlsup.kit.loaders.whisper import SAMPLE_RATE
from mlsup.testing.gateway import free_port, load_models, wait_for_gateway
from mlsup.testing.redis import TestRedis
from mlsup.testing.supervisor import RunningSupervisor, manifest
from mlsup.testing.tiny_models import (
    minilm_dir,
    smollm2_gguf,
    tiny_causal_lm,
    tiny_diffusion,
    tiny_whisper,
)

KEY = "test-key"
HI = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
GREEDY: dict[str, Any] = {"max_tokens": 12, "temperature": 0.0, "seed": 1}
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"  # SmolLM2 keeps counting: a long generation


def models_toml(port: int) -> str:
    return f"""
[models.smollm2]
loader = "gguf"
path = "{smollm2_gguf()}"
vram_mb = 400
idle_timeout_s = 0
options = {{ n_ctx = 512, seed = 1 }}

[models.minilm]
loader = "hf"
path = "{minilm_dir()}"
vram_mb = 400
idle_timeout_s = 0
options = {{ task = "embedding" }}

[models.tinylm]
loader = "hf"
path = "{tiny_causal_lm()}"
vram_mb = 100
idle_timeout_s = 0
options = {{ device = "cpu", task = "causal-lm" }}

[models.whisper]
loader = "whisper"
path = "{tiny_whisper()}"
vram_mb = 100
idle_timeout_s = 0
options = {{ device = "cpu" }}

[models.image]
loader = "diffusers"
path = "{tiny_diffusion()}"
vram_mb = 100
idle_timeout_s = 0
options = {{ device = "cpu" }}

[models.slow]
loader = "probe"
path = "probe.txt"
vram_mb = 50
idle_timeout_s = 0
options = {{ load_s = 5.0 }}

[http]
listen = "127.0.0.1:{port}"
api_key = "{KEY}"
max_queue = 1
"""


class Gateway:
    """The running supervisor and its gateway's address."""

    def __init__(self, supervisor: RunningSupervisor, base: str) -> None:
        self.supervisor = supervisor
        self.base = base
        self.headers = {"Authorization": f"Bearer {KEY}"}

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base}/v1", api_key=KEY, max_retries=0)

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, headers=self.headers, timeout=120)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with self.http() as http:
            text = http.get("/metrics").raise_for_status().text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, redis_server: TestRedis) -> Iterator[Gateway]:
    prefix = redis_server.prefix()
    port = free_port()
    directory = tmp_path_factory.mktemp("gateway")
    config = manifest(redis_server.url, prefix, models_toml(port), memory_mb=4000)
    supervisor = RunningSupervisor(directory, config).start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_gateway(base, output=supervisor.output())  # a sidecar: up shortly after
        with mlsup.connect(supervisor.runtime) as sup:  # up front: tests do not time loads
            load_models(sup, ("smollm2", "minilm", "tinylm", "whisper", "image"))
        yield Gateway(supervisor, base)
    finally:
        supervisor.stop()
        redis_server.cleanup(prefix)
        sweep_orphans()


def test_models_are_listed_with_kind_and_state(gateway: Gateway) -> None:
    client = gateway.client()
    listed = {m.id: m for m in client.models.list()}
    assert set(listed) == {"smollm2", "minilm", "tinylm", "whisper", "image", "slow"}
    assert listed["smollm2"].kind == "gguf"  # type: ignore[attr-defined]
    assert {m.state for m in listed.values()} <= {"unloaded", "loading", "ready"}  # type: ignore[attr-defined]
    assert listed["whisper"].owned_by == "mlsup"
    assert client.models.retrieve("minilm").kind == "hf"  # type: ignore[attr-defined]
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("nope")
    assert info.value.body["code"] == "model_not_found"  # type: ignore[index]


def test_chat_matches_the_proxy_with_usage_from_the_tokenizer(gateway: Gateway) -> None:
    client = gateway.client()
    answer = client.chat.completions.create(model="smollm2", messages=HI, **GREEDY)  # type: ignore[arg-type]
    with mlsup.connect(gateway.supervisor.runtime) as sup:
        model = sup.model("smollm2")
        expected = model.chat(HI, **GREEDY)
        specials = len(model.tokenize(""))
        completion = len(model.tokenize(expected)) - specials
    choice = answer.choices[0]
    assert choice.message.content == expected and choice.message.role == "assistant"
    assert answer.object == "chat.completion" and answer.model == "smollm2"
    assert answer.usage is not None and answer.usage.completion_tokens == completion
    assert answer.usage.prompt_tokens > 0
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + completion
    assert choice.finish_reason == ("length" if completion >= 12 else "stop")


def test_chat_streams_pieces_then_finish_then_usage(gateway: Gateway) -> None:
    client = gateway.client()
    whole = client.chat.completions.create(model="smollm2", messages=HI, **GREEDY)  # type: ignore[arg-type]
    chunks = list(
        client.chat.completions.create(
            model="smollm2", messages=HI, stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True}, **GREEDY,
        )
    )  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == whole.choices[0].finish_reason and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1


def test_completions_stream_as_server_sent_events(gateway: Gateway) -> None:
    body = {"model": "smollm2", "prompt": "The capital of France is", **GREEDY}
    with gateway.http() as http:
        plain = http.post("/v1/completions", json=body).raise_for_status().json()
        raw = http.post("/v1/completions", json={**body, "stream": True})
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("text/event-stream")
    events = raw.text.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert all(e.startswith("data: ") for e in events[:-2])
    assert "".join(c["choices"][0]["text"] for c in chunks) == plain["choices"][0]["text"]
    assert chunks[-1]["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]
    assert plain["object"] == "text_completion" and "usage" not in chunks[0]
    with mlsup.connect(gateway.supervisor.runtime) as sup:
        expected = sup.model("smollm2").complete("The capital of France is", **GREEDY)
    assert plain["choices"][0]["text"] == expected


def test_embeddings_equal_the_proxys(gateway: Gateway) -> None:
    sentences = ["a cat sits on the mat", "stock markets fell", "un chat"]
    with mlsup.connect(gateway.supervisor.runtime) as sup:
        expected = sup.model("minilm").embed(sentences)
    client = gateway.client()
    via_sdk = client.embeddings.create(model="minilm", input=sentences)  # base64 on the wire
    with gateway.http() as http:
        as_floats = (
            http.post("/v1/embeddings", json={"model": "minilm", "input": sentences})
            .raise_for_status()
            .json()
        )
        one = http.post("/v1/embeddings", json={"model": "minilm", "input": sentences[0]})
    for got in (
        np.array([d.embedding for d in via_sdk.data]),
        np.array([d["embedding"] for d in as_floats["data"]]),
    ):
        assert got.shape == expected.shape
        cosine = (
            (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
        )
        assert cosine.min() > 0.9999
    assert [d.index for d in via_sdk.data] == [0, 1, 2]
    assert via_sdk.usage.prompt_tokens == via_sdk.usage.total_tokens > len(sentences)
    assert len(one.json()["data"]) == 1


def write_wav(path: Path, seconds: float = 1.5) -> Path:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    samples = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(samples.tobytes())
    return path


def test_transcription_of_an_uploaded_wav(gateway: Gateway, tmp_path: Path) -> None:
    audio = write_wav(tmp_path / "tone.wav")
    with mlsup.connect(gateway.supervisor.runtime) as sup:
        expected = sup.model("whisper").transcribe(str(audio))
    client = gateway.client()
    with open(audio, "rb") as file:
        heard = client.audio.transcriptions.create(model="whisper", file=file)
    assert heard.text == expected["text"]
    with gateway.http() as http:
        files = {"file": ("tone.wav", audio.read_bytes(), "audio/wav")}
        route = "/v1/audio/transcriptions"
        text = http.post(route, files=files, data={"model": "whisper", "response_format": "text"})
        verbose = http.post(
            route, files=files, data={"model": "whisper", "response_format": "verbose_json"}
        )
        bogus = http.post("/v1/audio/transcriptions", data={"model": "whisper"},
                          files={"file": ("x.wav", b"not audio at all", "audio/wav")})  # fmt: skip
    assert text.text == expected["text"] + "\n"
    assert verbose.json()["language"] == expected["language"]
    assert verbose.json()["duration"] == pytest.approx(1.5, abs=0.05)
    assert bogus.status_code == 400 and bogus.json()["error"]["param"] == "file"


def test_images_come_back_as_png(gateway: Gateway) -> None:
    from PIL import Image

    client = gateway.client()
    result = client.images.generate(
        model="image", prompt="a red square", n=2, size="32x32",
        response_format="b64_json", extra_body={"seed": 3},
    )  # fmt: skip
    images = [
        np.asarray(Image.open(io.BytesIO(base64.b64decode(d.b64_json or "")))) for d in result.data
    ]
    assert [im.shape for im in images] == [(32, 32, 3)] * 2
    with mlsup.connect(gateway.supervisor.runtime) as sup:
        expected = sup.model("image").generate_image("a red square", seed=3, width=32, height=32)
    np.testing.assert_array_equal(images[0], expected)
    assert not np.array_equal(images[0], images[1])  # seed + 1


def test_errors_have_the_openai_shape(gateway: Gateway) -> None:
    client = gateway.client()
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="nope", messages=HI)  # type: ignore[arg-type]
    assert "known models" in missing.value.message
    with pytest.raises(openai.BadRequestError) as wrong_kind:
        client.chat.completions.create(model="whisper", messages=HI)  # type: ignore[arg-type]
    assert "served by gguf, validated-llama, hf models" in wrong_kind.value.message
    assert wrong_kind.value.body["code"] == "unsupported_operation"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as encoder:  # an hf model, but an encoder
        client.chat.completions.create(model="minilm", messages=HI)  # type: ignore[arg-type]
    assert "cannot serve /v1/chat/completions" in encoder.value.message
    with pytest.raises(openai.BadRequestError) as invalid:
        client.chat.completions.create(model="smollm2", messages=HI, temperature=7)  # type: ignore[arg-type]
    assert invalid.value.body["param"] == "temperature"  # type: ignore[index]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{gateway.base}/v1", api_key="wrong", max_retries=0).models.list()
    with httpx.Client(base_url=gateway.base) as anonymous:
        assert anonymous.get("/v1/models").status_code == 401
        assert anonymous.get("/metrics").status_code == 401
        assert anonymous.get("/health").json() == {"status": "ok"}
        assert anonymous.post("/v1/embeddings", content=b"{").status_code == 401
    with gateway.http() as http:
        broken = http.post("/v1/embeddings", content=b"{not json",
                           headers={"content-type": "application/json"})  # fmt: skip
        nowhere = http.get("/v2/nothing")
    assert broken.status_code == 400 and set(broken.json()["error"]) == {
        "message", "type", "param", "code"
    }  # fmt: skip
    assert nowhere.status_code == 404 and nowhere.json()["error"]["code"] == "not_found"


def test_a_full_queue_answers_429_with_retry_after(gateway: Gateway) -> None:
    first: dict[str, httpx.Response] = {}

    def slow_request() -> None:
        with gateway.http() as http:
            first["response"] = http.post("/v1/embeddings", json={"model": "slow", "input": "x"})

    thread = threading.Thread(target=slow_request)
    thread.start()
    # The first request holds the model's only place while the model loads (5 s).
    gateway.supervisor.wait_for("slow", lambda row: row["state"] in ("leasing", "starting"))
    with gateway.http() as http:
        second = http.post("/v1/embeddings", json={"model": "slow", "input": "y"})
    assert second.status_code == 429, second.text
    assert second.headers["retry-after"] == "1"
    assert second.json()["error"]["code"] == "queue_full"
    thread.join(60)
    assert first["response"].status_code == 200  # the queue drains: served once loaded
    with gateway.http() as http:
        assert http.post("/v1/embeddings", json={"model": "slow", "input": "y"}).status_code == 200


def worker_pid(gateway: Gateway, model: str) -> int:
    pid = gateway.supervisor.row(model)["pid"]
    assert isinstance(pid, int)
    return pid


def test_a_client_leaving_a_stream_stops_the_generation(gateway: Gateway) -> None:
    log = gateway.supervisor.runtime / "logs" / "smollm2.log"
    body = {"model": "smollm2", "prompt": COUNTING, "max_tokens": 400, "temperature": 0,
            "stream": True}  # fmt: skip
    with gateway.http() as http, http.stream("POST", "/v1/completions", json=body) as stream:
        first = next(stream.iter_lines())
        assert first.startswith("data: {")
    # The connection is closed: the worker must stop decoding rather than finish 400 tokens.
    deadline = time.monotonic() + 30
    while "stopped streaming 'complete.stream'" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.05)


def test_a_client_leaving_an_hf_stream_stops_the_generation(gateway: Gateway) -> None:
    """transformers generates in a thread of its own: closing the stream must stop it too (it
    would otherwise run to max_tokens, beside the next request on the same model)."""
    log = gateway.supervisor.runtime / "logs" / "tinylm.log"
    limit = 100_000  # minutes of decoding, were it not stopped
    body = {"model": "tinylm", "prompt": "hello", "max_tokens": limit, "temperature": 0,
            "stream": True}  # fmt: skip
    with gateway.http() as http, http.stream("POST", "/v1/completions", json=body) as stream:
        first = next(stream.iter_lines())
        assert first.startswith("data: {")
    stopped = re.compile(r"stopped generating with \S+ after (\d+) new tokens")
    deadline = time.monotonic() + 30
    while (found := stopped.search(log.read_text())) is None:
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.05)
    assert 1 <= int(found.group(1)) < limit
    # The worker serves on, its model free for the next call.
    again = gateway.client().completions.create(model="tinylm", prompt="hi", max_tokens=2)
    assert again.choices[0].text is not None


def test_a_worker_killed_mid_stream_ends_it_with_an_error_event(gateway: Gateway) -> None:
    client = gateway.client()
    client.completions.create(model="smollm2", prompt="hi", max_tokens=1)  # loaded
    pid = worker_pid(gateway, "smollm2")
    stream = client.completions.create(
        model="smollm2", prompt=COUNTING, max_tokens=400, temperature=0, stream=True
    )
    pieces = iter(stream)
    assert next(pieces).choices[0].text is not None
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(openai.APIError) as info:
        for _ in pieces:
            pass
    assert "pid" in info.value.message and "worker" in info.value.message
    # The next request is served by a respawned worker.
    again = client.completions.create(model="smollm2", prompt="hi", max_tokens=2)
    assert again.choices[0].text is not None and worker_pid(gateway, "smollm2") != pid


def test_metrics_parse_and_count_gateway_and_proxy_requests(gateway: Gateway) -> None:
    before = gateway.metrics()
    client = gateway.client()
    client.embeddings.create(model="minilm", input=["one"])
    with mlsup.connect(gateway.supervisor.runtime) as sup:
        for _ in range(3):
            sup.model("minilm").embed(["direct"])

    def value(name: str, metrics: dict[Any, float], **labels: str) -> float:
        return metrics.get((name, tuple(sorted(labels.items()))), 0.0)

    deadline = time.monotonic() + 30
    while True:  # workers report their counts with their heartbeat
        after = gateway.metrics()
        proxied = value("mlsup_requests_total", after, model="minilm", op="proxy",
                        status="served") - value("mlsup_requests_total", before, model="minilm",
                                                 op="proxy", status="served")  # fmt: skip
        if proxied >= 3:
            break
        assert time.monotonic() < deadline, f"proxy requests never counted: {proxied}"
        time.sleep(0.1)
    http_count = value("mlsup_requests_total", after, model="minilm", op="embed", status="200")
    assert (
        http_count - value("mlsup_requests_total", before, model="minilm", op="embed", status="200")
        == 1
    )
    assert value("mlsup_model_state", after, model="minilm", state="ready") == 1
    assert value("mlsup_model_state", after, model="minilm", state="unloaded") == 0
    assert value("mlsup_lease_vram_bytes", after, model="minilm", gpu="0") == 400 << 20
    assert value("mlsup_gpu_memory_total_bytes", after, gpu="0") == 4000 << 20
    assert value("mlsup_request_duration_seconds_count", after, model="minilm", op="embed") >= 1
    assert value("mlsup_time_to_first_token_seconds_count", after, model="smollm2") >= 1
    assert value("mlsup_lease_wait_seconds_count", after) >= 1
    assert value("mlsup_model_load_duration_seconds", after, model="minilm") > 0
    assert value("mlsup_worker_restarts_total", after, model="smollm2", reason="crash") >= 1
    assert ("mlsup_requests_running", (("model", "minilm"),)) in after


def test_the_readme_http_examples_run(gateway: Gateway) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## OpenAI-compatible HTTP", 1)[1].split("\n## ", 1)[0]
    address = gateway.base.removeprefix("http://")

    def ours(code: str) -> str:
        return code.replace("127.0.0.1:8000", address).replace("change-me", KEY)

    shell = re.findall(r"```sh\n(.*?)```", section, re.S)[0]
    commands = shell.split("\n", 1)[1]  # all but `mlsup start`: the fixture runs one
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", ours(commands)], capture_output=True,
                         text=True, timeout=300, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert '"object":"chat.completion"' in out.stdout and "data: [DONE]" in out.stdout
    assert "mlsup_requests_total{" in out.stdout
    python = re.findall(r"```py\n(.*?)```", section, re.S)[0]
    out = subprocess.run([sys.executable, "-c", ours(python)], capture_output=True, text=True,
                         timeout=300, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "('smollm2', 'gguf', 'ready')" in out.stdout and out.stdout.rstrip().endswith("384")


def test_a_crashed_gateway_is_respawned_and_the_supervisor_keeps_serving(
    gateway: Gateway,
) -> None:
    def gateway_pids() -> list[int]:
        starts = re.findall(r"sidecar gateway: started pid (\d+)", gateway.supervisor.output())
        return [int(pid) for pid in starts]

    [pid] = gateway_pids()[-1:]
    model_pid = worker_pid(gateway, "minilm")
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while len(gateway_pids()) < 2 or gateway_pids()[-1] == pid:
        assert time.monotonic() < deadline, gateway.supervisor.output()[-3000:]
        time.sleep(0.05)
    wait_for_gateway(gateway.base, output=gateway.supervisor.output())
    # The control plane and the models never noticed: same worker, still ready.
    row = gateway.supervisor.row("minilm")
    assert (row["state"], row["pid"]) == ("ready", model_pid)
    assert "exited with signal SIGKILL; respawning" in gateway.supervisor.output()
    answer = gateway.client().embeddings.create(model="minilm", input="still here")
    assert len(answer.data[0].embedding) == 384
