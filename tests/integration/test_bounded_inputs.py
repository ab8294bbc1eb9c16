"""Oversized and mistyped input to a live supervised worker: bounded memory, the right error,
and the worker keeps serving (issue 14, item 7)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq

from mlsup.bench.supervised import probe_model
from mlsup.errors import InvalidArgument, ProtocolError, error_from_wire
from mlsup.ipc.shm import sweep_orphans
from mlsup.ipc.wire import Kind, decode
from mlsup.testing.redis import TestRedis

from .supervisor_helpers import RunningSupervisor, manifest

PROBE = probe_model("probe", vram_mb=100, idle_timeout_s=0)
LIMIT = 256 << 10  #: the test supervisor's max_message_bytes
HUGE = 64 << 20  #: the hostile header: 64 MiB of one-byte integers in one array


@pytest.fixture
def supervisor(
    tmp_path: Path, redis_server: TestRedis, redis_prefix: str
) -> Iterator[RunningSupervisor]:
    config = manifest(redis_server.url, redis_prefix, PROBE, max_message_bytes=LIMIT)
    running = RunningSupervisor(tmp_path, config).start()
    yield running
    running.stop()
    sweep_orphans()


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MiB: what a transient allocation leaves."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def huge_header(rid: int) -> bytes:
    """A well-formed request header whose arguments are HUGE one-byte integers, built without
    materializing them here (unpacking it all would cost ~9 bytes of Python per byte)."""
    head = msgpack.packb([1, int(Kind.REQUEST), rid, "run", None, None, None])
    return b"\x98" + head[1:] + b"\xdd" + HUGE.to_bytes(4, "big") + bytes(HUGE)


def send_raw(endpoint: str, frames: list[bytes]) -> list[bytes]:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.RCVTIMEO, 30_000)
    sock.connect(endpoint)
    try:
        sock.send_multipart(frames)
        return sock.recv_multipart()
    finally:
        sock.close(linger=0)


def test_a_huge_header_is_refused_without_parsing_it(supervisor: RunningSupervisor) -> None:
    with supervisor.client() as client:
        model = client.model("probe", timeout=30)
        assert model.run({"warm": 1}) == {"warm": 1}
        row = supervisor.row("probe")
        before = peak_rss_mb(row["pid"])
        reply = decode(send_raw(row["endpoint"], [huge_header(rid=4242)]))
        growth = peak_rss_mb(row["pid"]) - before
        assert reply.kind is Kind.ERROR and reply.id == 4242  # addressed to its request
        error = error_from_wire(reply.error)
        assert isinstance(error, ProtocolError)
        assert str(LIMIT) in str(error)  # the configured limit, not the default
        # ZeroMQ holds the 64 MiB message itself; parsing it would add ~500 MiB more.
        assert growth < 64 + 64, f"peak RSS grew {growth:.0f} MiB"
        assert model.run({"still": "serving"}) == {"still": "serving"}
        assert supervisor.row("probe")["pid"] == row["pid"]


def test_an_array_sent_to_embed_is_an_invalid_argument(supervisor: RunningSupervisor) -> None:
    with supervisor.client() as client:
        model = client.model("probe", timeout=30)
        with pytest.raises(InvalidArgument, match="'texts' must be a list of strings") as caught:
            model.embed(np.zeros(HUGE // 4, dtype=np.float32))
        assert "float32" in str(caught.value) and caught.value.context["parameter"] == "texts"
        with pytest.raises(InvalidArgument, match="'prompt' must be a string, not a int"):
            model.complete(42)
        with pytest.raises(InvalidArgument, match="'texts' is missing"):
            model.call("embed")
        pid = supervisor.row("probe")["pid"]
        assert model.embed(["a", "b"]).shape == (2, 8)
        assert supervisor.row("probe")["pid"] == pid  # the same worker, still serving


def test_the_message_limit_is_a_setting(supervisor: RunningSupervisor) -> None:
    with supervisor.client() as client:
        model = client.model("probe", timeout=30)
        many = ["x" * 1000] * 300  # ~300 KiB of texts in the header: over LIMIT
        with pytest.raises(ProtocolError, match=f"exceeds {LIMIT}"):
            model.embed(many)
        assert model.embed(many[:100]).shape == (100, 8)
