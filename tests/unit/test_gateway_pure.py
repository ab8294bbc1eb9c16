"""The gateway's pure parts, without servers: request translation, response and chunk shapes,
SSE framing, error mapping, kinds, the queue bound, metrics families, PNG and audio sniffing."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import zlib
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from mlsup import defaults
from mlsup.errors import (
    ConfigError,
    ModelFailed,
    ModelLoadError,
    ModelNotFound,
    Preempted,
    QueueFull,
    RequestTimeout,
    UnsupportedOperation,
    WorkerCrashed,
    error_from_wire,
)
from mlsup.gateway.admission import ModelQueue
from mlsup.gateway.http_errors import http_error
from mlsup.gateway.media import audio_format, png
from mlsup.gateway.metrics import RequestTally, RestartTally, Snapshot, supervisor_families
from mlsup.gateway.operations import check_kind, public_state, read_row
from mlsup.gateway.requests import (
    COMPLETION_MAX_TOKENS,
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    ImageRequest,
    chat_call,
    completion_call,
    embedding_texts,
    image_options,
)
from mlsup.gateway.shapes import (
    DONE,
    Head,
    Usage,
    chat_chunk,
    chat_response,
    embeddings_response,
    finish_reason,
    sse,
    text_chunk,
    transcription_response,
)

HEAD = Head("chatcmpl-1", 1700000000, "m")


def row(**fields: Any) -> dict[str, Any]:
    base = {"model": "m", "loader": "gguf", "state": "ready", "pid": 7, "generation": 1,
            "requests": 0, "restarts": 0, "gpu": 0, "leased_mb": 100, "last_exit": None,
            "timeline": {}}  # fmt: skip
    return {**base, **fields}


# -- requests ----------------------------------------------------------------------------------


def test_chat_request_becomes_a_proxy_call_with_only_the_given_knobs() -> None:
    body = ChatRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
         "max_completion_tokens": 5, "temperature": 0, "stop": ["\n"], "user": "ignored",
         "stream": True, "stream_options": {"include_usage": True}}
    )  # fmt: skip
    call = chat_call(body)
    assert call.prompt == [{"role": "user", "content": "ab"}]
    assert call.kwargs == {"max_tokens": 5, "temperature": 0, "stop": ["\n"]}
    assert call.stream and call.include_usage and call.max_tokens == 5


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "messages": []},
        {"model": "", "messages": [{"role": "user", "content": "x"}]},
        {"model": "m", "messages": [{"role": "wizard", "content": "x"}]},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 3},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
    ],
)
def test_invalid_chat_bodies_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ChatRequest.model_validate(body)


def test_unsupported_chat_parts_and_fields_are_config_errors() -> None:
    image = {"type": "image_url", "image_url": {"url": "http://x"}}
    body = ChatRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": [image]}]}
    )
    with pytest.raises(ConfigError) as info:
        chat_call(body)
    assert info.value.context["field"] == "messages[0].content"
    logprobs = ChatRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "logprobs": True}
    )
    with pytest.raises(ConfigError):
        chat_call(logprobs)


def test_completion_defaults_to_the_apis_max_tokens_and_one_prompt() -> None:
    call = completion_call(CompletionRequest.model_validate({"model": "m", "prompt": ["p"]}))
    assert call.prompt == "p" and call.kwargs == {"max_tokens": COMPLETION_MAX_TOKENS}
    for bad in ({"prompt": ["a", "b"]}, {"prompt": "a", "echo": True}):
        with pytest.raises(ConfigError):
            completion_call(CompletionRequest.model_validate({"model": "m", **bad}))


def test_embedding_inputs_and_image_options() -> None:
    assert embedding_texts(EmbeddingRequest(model="m", input="a")) == ["a"]
    for bad in ([], ["a", ""]):
        with pytest.raises(ConfigError):
            embedding_texts(EmbeddingRequest(model="m", input=bad))
    assert image_options(ImageRequest(model="m", prompt="p", size="64x32", seed=4)) == {
        "width": 64, "height": 32, "seed": 4,
    }  # fmt: skip
    for size in ("64", "axb", "63x64", "8192x8"):
        with pytest.raises(ConfigError):
            image_options(ImageRequest(model="m", prompt="p", size=size))


# -- shapes ------------------------------------------------------------------------------------


def test_sse_framing_and_chunks() -> None:
    event = sse(chat_chunk(HEAD, {"content": "hé"}))
    assert event.startswith(b"data: {") and event.endswith(b"}\n\n") and b"\n" not in event[:-2]
    chunk = json.loads(event[6:])
    assert chunk["object"] == "chat.completion.chunk" and "usage" not in chunk
    assert chunk["choices"] == [
        {"index": 0, "delta": {"content": "hé"}, "logprobs": None, "finish_reason": None}
    ]
    last = chat_chunk(HEAD, None, usage=Usage(3, 4), with_usage=True)
    assert last["choices"] == [] and last["usage"]["total_tokens"] == 7
    assert chat_chunk(HEAD, {}, "stop", with_usage=True)["usage"] is None
    assert text_chunk(HEAD, "x")["object"] == "text_completion"
    assert DONE == b"data: [DONE]\n\n"


def test_responses_and_finish_reasons() -> None:
    body = chat_response(HEAD, "Paris", Usage(10, 2), "stop")
    assert body["usage"] == {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Paris"}
    assert finish_reason(12, 12) == "length"
    assert finish_reason(3, 12) == "stop"
    assert finish_reason(500, None) == "stop"


def test_embeddings_as_floats_and_as_base64_little_endian() -> None:
    vectors = np.array([[1.0, -2.5], [0.25, 3.0]], dtype=np.float32)
    floats = embeddings_response("m", vectors, "float", 6)
    assert [d["embedding"] for d in floats["data"]] == [[1.0, -2.5], [0.25, 3.0]]
    assert floats["usage"] == {"prompt_tokens": 6, "total_tokens": 6}
    b64 = embeddings_response("m", vectors, "base64", 6)
    decoded = [np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in b64["data"]]
    np.testing.assert_array_equal(np.stack(decoded), vectors)
    with pytest.raises(ValueError):
        embeddings_response("m", vectors[0], "float", 1)


def test_transcription_formats() -> None:
    result = {"text": " hi ", "language": "en", "duration": 1.5,
              "segments": [{"start": 0.0, "end": 1.0, "text": " hi "}]}  # fmt: skip
    assert transcription_response(result, "json") == ({"text": " hi "}, "application/json")
    assert transcription_response(result, "text")[0] == " hi \n"
    verbose, _ = transcription_response(result, "verbose_json")
    assert verbose["segments"][0] == {"id": 0, "seek": 0, "start": 0.0, "end": 1.0,
                                      "text": " hi "}  # fmt: skip
    assert verbose["language"] == "en" and verbose["duration"] == 1.5


# -- errors and kinds --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "code", "retry"),
    [
        (ModelNotFound("no"), 404, "model_not_found", False),
        (UnsupportedOperation("no"), 400, "unsupported_operation", False),
        (ConfigError("bad", field="size"), 400, "config_error", False),
        (QueueFull("full"), 429, "queue_full", True),
        (Preempted("p"), 503, "preempted", True),
        (WorkerCrashed("c"), 503, "worker_crashed", True),
        (ModelFailed("f"), 503, "model_failed", False),
        (RequestTimeout("t"), 504, "request_timeout", True),
        (ModelLoadError("l"), 500, "model_load_error", False),
    ],
)
def test_errors_map_to_status_code_and_retry_after(
    error: Any, status: int, code: str, retry: bool
) -> None:
    answer = http_error(error)
    assert answer.status == status
    assert set(answer.body["error"]) == {"message", "type", "param", "code"}
    assert answer.body["error"]["code"] == code
    assert answer.headers == ({"Retry-After": str(defaults.GATEWAY_RETRY_AFTER_S)} if retry else {})
    assert http_error(ModelNotFound("x")).body["error"]["param"] == "model"


def test_new_errors_cross_the_wire() -> None:
    for cls in (QueueFull, UnsupportedOperation):
        assert type(error_from_wire(cls("x", model="m").to_wire())) is cls


def test_kinds_and_states() -> None:
    check_kind("m", "gguf", "chat")
    check_kind("m", "probe", "transcribe")  # unknown kinds: their worker answers
    with pytest.raises(UnsupportedOperation) as info:
        check_kind("w", "whisper", "embed")
    assert "/v1/embeddings is served by hf, gguf, validated-llama models" in info.value.message
    assert [public_state(s) for s in ("leasing", "starting", "backoff", "draining", "ready")] == [
        "loading", "loading", "loading", "unloading", "ready",
    ]  # fmt: skip
    parsed = read_row(row(state="ready", requests=3))
    assert (parsed.model, parsed.kind, parsed.requests) == ("m", "gguf", 3)


# -- queue and metrics -------------------------------------------------------------------------


async def test_the_queue_serves_one_at_a_time_and_refuses_past_its_bound() -> None:
    queue = ModelQueue("m", limit=2)
    first = await queue.enter()
    second = asyncio.ensure_future(queue.enter())
    await asyncio.sleep(0)
    assert (queue.running, queue.waiting) == (1, 1) and not second.done()
    with pytest.raises(QueueFull) as info:
        await queue.enter()
    assert info.value.context == {"model": "m", "limit": 2}
    first.release()
    first.release()  # idempotent
    ticket = await second
    assert (queue.running, queue.waiting) == (1, 0)
    ticket.release()
    assert (queue.running, queue.waiting) == (0, 0)


def test_proxy_requests_are_derived_monotonic_across_respawns() -> None:
    tally = RequestTally()
    tally.observe(read_row(row(generation=1, requests=5)))
    tally.gateway_sent("m", 2)
    assert tally.others("m") == 3
    tally.observe(read_row(row(generation=2, requests=1)))  # respawned: counts from zero
    assert tally.others("m") == 4
    tally.gateway_sent("m", 3)  # the worker's heartbeat has not caught up yet
    assert tally.others("m") == 4


def test_restarts_are_counted_under_the_reason_of_each_respawn() -> None:
    tally = RestartTally()
    tally.observe(read_row(row(restarts=0)))
    assert tally.counts("m") == {"crash": 0}
    tally.observe(read_row(row(restarts=2, exit_reason="crash")))
    tally.observe(read_row(row(restarts=3, exit_reason="oom")))
    tally.observe(read_row(row(restarts=3, exit_reason="unload")))  # no respawn: not counted
    tally.observe(read_row(row(restarts=4, exit_reason="stalled")))
    assert tally.counts("m") == {"crash": 2, "oom": 1, "stalled": 1}
    tally.observe(read_row(row(restarts=1, exit_reason="crash")))  # a new supervisor's count
    assert tally.counts("m") == {"crash": 3, "oom": 1, "stalled": 1}
    assert tally.counts("other") == {"crash": 0}


def test_supervisor_families_render_and_parse() -> None:
    rows = [read_row(row(state="starting", restarts=2, requests=4, exit_reason="oom",
                         timeline={"lease_requested": 1.0, "ready": 3.5}))]  # fmt: skip
    leases = [{"gpu": 0, "capacity_mb": 1000, "model_id": "m", "vram_mb": 100},
              {"gpu": 0, "capacity_mb": 1000, "model_id": "other", "vram_mb": 50}]  # fmt: skip
    gpus = [{"gpu": 0, "capacity_mb": 1000}, {"gpu": 1, "capacity_mb": 2000}]  # 1: no lease
    families = supervisor_families(
        Snapshot(rows, leases, gpu_used={0: 7 << 20}, gpus=gpus),
        RequestTally(),
        {},
        {("m", "chat", "200"): 2},
    )

    class Static:
        def collect(self) -> Any:
            return families

    registry = CollectorRegistry()
    registry.register(Static())  # type: ignore[arg-type]
    parsed = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(generate_latest(registry).decode())
        for s in f.samples
    }
    assert parsed[("mlsup_model_state", (("model", "m"), ("state", "loading")))] == 1
    assert parsed[("mlsup_model_state", (("model", "m"), ("state", "ready")))] == 0
    assert (
        parsed[("mlsup_requests_total", (("model", "m"), ("op", "chat"), ("status", "200")))] == 2
    )
    assert parsed[("mlsup_requests_total", (("model", "m"), ("op", "proxy"),
                                            ("status", "served")))] == 4  # fmt: skip
    assert parsed[("mlsup_model_load_duration_seconds", (("model", "m"),))] == 2.5
    assert parsed[("mlsup_worker_restarts_total", (("model", "m"), ("reason", "oom")))] == 2
    assert parsed[("mlsup_worker_restarts_total", (("model", "m"), ("reason", "crash")))] == 0
    assert parsed[("mlsup_gpu_memory_total_bytes", (("gpu", "1"),))] == 2000 << 20
    assert parsed[("mlsup_gpu_memory_leased_bytes", (("gpu", "1"),))] == 0
    assert parsed[("mlsup_gpu_memory_leased_bytes", (("gpu", "0"),))] == 150 << 20
    assert parsed[("mlsup_gpu_memory_total_bytes", (("gpu", "0"),))] == 1000 << 20
    assert parsed[("mlsup_lease_vram_bytes", (("gpu", "0"), ("model", "other")))] == 50 << 20
    assert parsed[("mlsup_gpu_memory_used_bytes", (("gpu", "0"),))] == 7 << 20


# -- media -------------------------------------------------------------------------------------


def test_png_round_trips_through_its_own_structure() -> None:
    image = np.arange(4 * 3 * 3, dtype=np.uint8).reshape(4, 3, 3)
    data = png(image)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, depth, color = struct.unpack(">IIBB", data[16:26])
    assert (width, height, depth, color) == (3, 4, 8, 2)
    length = struct.unpack(">I", data[33:37])[0]
    raw = zlib.decompress(data[41 : 41 + length])
    rows = np.frombuffer(raw, np.uint8).reshape(4, 1 + 9)
    assert not rows[:, 0].any()
    np.testing.assert_array_equal(rows[:, 1:].reshape(4, 3, 3), image)
    with pytest.raises(ValueError):
        png(image.astype(np.float32))


def test_audio_containers_are_recognized_by_their_first_bytes() -> None:
    assert audio_format(b"RIFF\x00\x00\x00\x00WAVEfmt ") == "wav"
    assert audio_format(b"fLaC\x00\x00\x00\x22") == "flac"
    assert audio_format(b"ID3\x04\x00") == "mp3"
    assert audio_format(b"\xff\xfb\x90\x00") == "mp3"
    for junk in (b"", b"not audio", b"OggS\x00", b"\xff\xf1"):  # ogg, AAC/ADTS
        with pytest.raises(ConfigError):
            audio_format(junk)
