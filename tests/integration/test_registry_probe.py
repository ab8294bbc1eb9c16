"""The registry's probes against real sockets: concurrent health checks, deadlines, owners."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest

from mlsup.service.registry_checks import Health, HealthReport
from mlsup.service.registry_probe import probe_entrypoints, probe_health, probe_listeners

Serve = Callable[[Callable[[BaseHTTPRequestHandler], None]], int]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start a threaded HTTP server on 127.0.0.1 whose GET runs ``answer``; returns its port."""
    servers: list[ThreadingHTTPServer] = []

    def start(answer: Callable[[BaseHTTPRequestHandler], None]) -> int:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                answer(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return int(server.server_address[1])

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def reply(handler: BaseHTTPRequestHandler, status: int, document: object) -> None:
    body = json.dumps(document).encode()
    handler.send_response(status)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def test_health_probes_run_concurrently(serve: Serve) -> None:
    # Each server answers only once all three requests are in flight at the same time: probes
    # made one after another would each wait for the others, in vain, and be reported down.
    together = threading.Barrier(3, timeout=20)

    def answer(handler: BaseHTTPRequestHandler) -> None:
        try:
            together.wait()
        except threading.BrokenBarrierError:
            return
        reply(handler, 200, {"status": "ok", "model_loaded": True})

    ports = [serve(answer) for _ in range(3)]
    reports = probe_health(ports, timeout=10)
    assert reports == {p: HealthReport(Health.OK, "model_loaded=true") for p in ports}


def test_every_verdict_from_real_answers(serve: Serve) -> None:
    hung = threading.Event()

    def never(handler: BaseHTTPRequestHandler) -> None:
        hung.wait(30)  # released at the end of the test

    loading = serve(lambda h: reply(h, 503, {"status": "loading", "model_loaded": False}))
    foreign = serve(lambda h: h.send_error(404))
    silent = serve(never)
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        closed = spare.getsockname()[1]
    try:
        reports = probe_health([loading, foreign, silent, closed], timeout=0.5)
    finally:
        hung.set()
    assert reports[loading] == HealthReport(Health.LOADING, "HTTP 503")
    assert reports[foreign] == HealthReport(Health.UNEXPECTED, "HTTP 404")
    # A server that never answers is down once the deadline passes: the listing never hangs.
    assert reports[silent] == HealthReport(Health.DOWN, "no answer within 0.5 s")
    assert reports[closed] == HealthReport(Health.DOWN, "connection refused")
    assert probe_health([]) == {}


def test_a_proxy_in_the_environment_is_not_used_for_loopback(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = serve(lambda h: reply(h, 200, {"status": "ok"}))
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    assert probe_health([port], timeout=5)[port].health is Health.OK


def test_listeners_name_their_process(serve: Serve) -> None:
    port = serve(lambda h: reply(h, 200, {"status": "ok"}))
    with socket.socket() as idle:
        idle.bind(("127.0.0.1", 0))
        not_listening = idle.getsockname()[1]
        found = probe_listeners([port, not_listening])
    assert list(found) == [port]
    (listener,) = found[port]
    me = psutil.Process()
    assert (listener.port, listener.pid) == (port, os.getpid())
    assert listener.cwd == me.cwd()
    assert listener.cmdline == tuple(me.cmdline())


def test_entrypoints_resolve_symlinks_and_drop_missing(tmp_path: Path) -> None:
    real = tmp_path / "real-runner"
    real.mkdir()
    link = tmp_path / "runner"
    link.symlink_to(real)
    found = probe_entrypoints([str(link), str(tmp_path / "missing")])
    assert found == {str(link): str(real.resolve())}
