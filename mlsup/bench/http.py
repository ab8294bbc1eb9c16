"""``mlsup bench http``: the OpenAI-compatible gateway against the proxy and in-process models.

* MiniLM embeddings through HTTP vs the proxy (target <= 1.15x the proxy's latency), and
  embeddings/s through HTTP, the proxy and in-process;
* SmolLM2 chat through HTTP vs in-process (target <= 1.03x), and tokens/s of each path;
* p50 time to first token of a streamed chat through HTTP vs in-process (target <= +5 ms);
* the layout decision: control-plane ``status`` latency while the gateway streams, with the
  gateway as a sidecar process and with it on the supervisor's own event loop.

Paths alternate in blocks (see the proxy suite), so that machine noise hits them alike.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from mlsup.bench.ipc import latencies
from mlsup.bench.proxy import compare, interleaved
from mlsup.bench.rows import Row, not_run, percentile
from mlsup.bench.supervised import supervisor
from mlsup.bench.workloads import by_kind
from mlsup.testing.gateway import free_port, load_models, wait_for_gateway
from mlsup.testing.redis import test_redis
from mlsup.testing.supervisor import RunningSupervisor, manifest

__all__ = ["run"]

SUITE = "http"
_SENTENCES = by_kind("minilm").args[0]
_CHAT = by_kind("smollm2")
_LAYOUT_ROW = "control status p99 while the gateway serves"


def _models(port: int) -> str:
    return (
        by_kind("minilm").manifest(idle_timeout_s=0)
        + _CHAT.manifest(idle_timeout_s=0)
        + f'[http]\nlisten = "127.0.0.1:{port}"\n'
    )


def _throughput(name: str, per_call: float, samples: list[float], baseline: str,
                base_samples: list[float]) -> Row:  # fmt: skip
    """A rate row (``per_call`` items per call) from latencies; no target (context rows)."""
    value = per_call / percentile(samples, 50)
    base_value = per_call / percentile(base_samples, 50)
    return Row(SUITE, name, "/s", value, baseline, base_value, None, None)


def _ours(row: Row) -> Row:
    """A row built by the proxy suite's helper, filed under this suite."""
    return dataclasses.replace(row, suite=SUITE)


def _http_embed(http: httpx.Client) -> Callable[[], object]:
    def call() -> object:
        body = {"model": "minilm", "input": _SENTENCES, "encoding_format": "base64"}
        data = http.post("/v1/embeddings", json=body).raise_for_status().json()["data"]
        return [np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in data]

    return call


def _http_chat(http: httpx.Client) -> Callable[[], object]:
    def call() -> object:
        body = {"model": "smollm2", "messages": _CHAT.args[0], **_CHAT.kwargs}
        return http.post("/v1/chat/completions", json=body).raise_for_status().json()

    return call


def _first_piece_http(http: httpx.Client) -> float:
    body = {"model": "smollm2", "messages": _CHAT.args[0], "stream": True, **_CHAT.kwargs}
    started = time.perf_counter()
    first = 0.0
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if '"content":"' in line and '"content":""' not in line and not first:
                first = time.perf_counter() - started
    return first


def _first_piece_local(model: Any) -> float:
    started = time.perf_counter()
    first = 0.0
    for _ in model.chat(_CHAT.args[0], stream=True, **_CHAT.kwargs):
        if not first:
            first = time.perf_counter() - started
    return first


def _model_rows(sup: Any, http: httpx.Client, count: int) -> list[Row]:
    rows = []
    minilm = by_kind("minilm")
    loader, local = minilm.load()
    try:
        proxy_model = sup.model("minilm")
        via_http, via_proxy = interleaved(
            _http_embed(http), lambda: minilm.call(proxy_model), count
        )
        in_process = latencies(lambda: minilm.call(local), count)
    finally:
        loader.unload()
    rows.append(_ours(compare("minilm embed p50 via HTTP", via_http, via_proxy, "via proxy", 1.15)))
    n = len(_SENTENCES)
    rows.append(_throughput("minilm embeddings/s via HTTP", n, via_http, "via proxy", via_proxy))
    rows.append(
        _throughput("minilm embeddings/s via proxy", n, via_proxy, "in-process", in_process)
    )

    loader, local = _CHAT.load()
    try:
        chats = max(4, count // 8)
        via_http, in_process = interleaved(_http_chat(http), lambda: _CHAT.call(local), chats)
        via_proxy = latencies(lambda: _CHAT.call(sup.model("smollm2")), chats)
        tokens = http.post(
            "/v1/chat/completions",
            json={"model": "smollm2", "messages": _CHAT.args[0], **_CHAT.kwargs},
        ).json()["usage"]["completion_tokens"]
        ttft_http, ttft_local, ttft_proxy = [], [], []
        for _ in range(chats):  # interleaved, like the rest
            ttft_http.append(_first_piece_http(http))
            ttft_local.append(_first_piece_local(local))
            ttft_proxy.append(_first_piece_local(sup.model("smollm2")))
    finally:
        loader.unload()
    proxy_ms = percentile(via_proxy, 50) * 1e3
    rows.append(
        _ours(
            compare(
                "smollm2 chat p50 via HTTP", via_http, in_process, "in-process", 1.03,
                explain=lambda over: f"the proxy alone takes {proxy_ms:.1f} ms here; HTTP adds "
                f"{percentile(via_http, 50) * 1e3 - proxy_ms:.1f} ms to it",
            )
        )
    )  # fmt: skip
    rows.append(
        _throughput("smollm2 chat tokens/s via HTTP", tokens, via_http, "in-process", in_process)
    )
    rows.append(
        _throughput("smollm2 chat tokens/s via proxy", tokens, via_proxy, "in-process", in_process)
    )
    value, base = percentile(ttft_http, 50) * 1e3, percentile(ttft_local, 50) * 1e3
    proxy_first = percentile(ttft_proxy, 50) * 1e3
    met = value <= base + 5
    note = (
        None
        if met
        else (
            f"the proxy's first piece comes at {proxy_first:.1f} ms here (in-process "
            f"{base:.1f} ms); HTTP adds {value - proxy_first:.1f} ms to it"
        )
    )
    rows.append(
        Row(SUITE, "smollm2 time to first token p50 via HTTP", "ms", value, "in-process", base,
            "<= in-process + 5 ms", met, note, tuple(ttft_http), tuple(ttft_local))
    )  # fmt: skip
    return rows


@contextlib.contextmanager
def _streaming(base: str) -> Iterator[None]:
    """Gateway traffic until the block ends: chat streams back to back, and embeddings of 32
    sentences as JSON floats (the gateway's heaviest encoding work per request)."""
    stop = threading.Event()

    def chats() -> None:
        with httpx.Client(base_url=base, timeout=120) as http:
            body = {"model": "smollm2", "messages": _CHAT.args[0], "stream": True,
                    "max_tokens": 64, "temperature": 0}  # fmt: skip
            while not stop.is_set():
                with http.stream("POST", "/v1/chat/completions", json=body) as response:
                    for _ in response.iter_lines():
                        pass  # an error answer is load all the same

    def embeddings() -> None:
        with httpx.Client(base_url=base, timeout=120) as http:
            body = {"model": "minilm", "input": list(_SENTENCES) * 11}
            while not stop.is_set():
                http.post("/v1/embeddings", json=body)  # an error answer is load all the same

    threads = [threading.Thread(target=work, daemon=True) for work in (chats, embeddings)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # let the streams start
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(120)


def _status_latencies(sup: Any, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        time.sleep(0.005)
        started = time.perf_counter()
        sup.status()
        samples.append(time.perf_counter() - started)
    return samples


def _layout_rows(layouts: list[tuple[str, Any, str]], count: int, blocks: int) -> list[Row]:
    """Per layout (name, control-plane client, gateway URL): status latencies idle and while
    its gateway serves, the layouts alternating in ``blocks`` blocks (same background load)."""
    idle: dict[str, list[float]] = {name: [] for name, _, _ in layouts}
    busy: dict[str, list[float]] = {name: [] for name, _, _ in layouts}
    for _ in range(blocks):
        for name, sup, base in layouts:
            idle[name] += _status_latencies(sup, count // blocks)
            with _streaming(base):
                busy[name] += _status_latencies(sup, count // blocks)
    rows = []
    for name, _, _ in layouts:
        b, i = busy[name], idle[name]
        rows.append(Row(
            SUITE, f"{_LAYOUT_ROW} ({name})", "ms", percentile(b, 99) * 1e3,
            "idle control plane", percentile(i, 99) * 1e3, None, None,
            f"p50 {percentile(b, 50) * 1e3:.2f} ms vs {percentile(i, 50) * 1e3:.2f} ms idle",
            tuple(b), tuple(i),
        ))  # fmt: skip
    return rows


@contextlib.contextmanager
def _inprocess_layout(port: int) -> Iterator[RunningSupervisor]:
    """The supervisor with the gateway on its own event loop (the rejected layout)."""
    with test_redis() as redis, tempfile.TemporaryDirectory(prefix="mlsup-bench-") as tmp:
        prefix = f"mlsup-bench:{os.getpid()}:{port}:"
        running = RunningSupervisor(
            Path(tmp), manifest(redis.url, prefix, _models(port), memory_mb=16000), "inproc"
        )
        env = {**os.environ, "MLSUP_RUNTIME_DIR": str(running.runtime)}
        with open(running.log, "ab") as log:
            running.process = subprocess.Popen(
                [sys.executable, "-m", "mlsup.bench.gateway_inprocess", str(running.config),
                 str(port)], stdout=log, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        try:
            running.wait_ready()
            yield running
        finally:
            running.stop()
            redis.cleanup(prefix)


def run(quick: bool = False) -> list[Row]:
    """All http rows; ``quick`` uses a few calls of each, and measures the sidecar layout
    only (the other needs a second supervisor)."""
    count, status_count = (8, 40) if quick else (60, 600)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with supervisor(_models(port)) as running, running.client(timeout=120) as sup:
        wait_for_gateway(base)
        load_models(sup, ("minilm", "smollm2"))
        with httpx.Client(base_url=base, timeout=120) as http:
            rows = _model_rows(sup, http, count)
        sidecar = ("sidecar process", sup, base)
        if quick:
            rows += _layout_rows([sidecar], status_count, blocks=1)
            rows.append(not_run(SUITE, f"{_LAYOUT_ROW} (same process as the supervisor)", "ms",
                                "--quick does not start a second supervisor"))  # fmt: skip
            return rows
        other_port = free_port()
        other_base = f"http://127.0.0.1:{other_port}"
        with _inprocess_layout(other_port) as other, other.client(timeout=120) as other_sup:
            wait_for_gateway(other_base)
            load_models(other_sup, ("minilm", "smollm2"))
            same = ("same process as the supervisor", other_sup, other_base)
            rows += _layout_rows([sidecar, same], status_count, blocks=3)
    return rows
