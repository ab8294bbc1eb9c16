"""The bridge between two real processes: tensors, errors, streams, timeouts, concurrency."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import signal
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import zmq

from mlsup.errors import ModelOOM, ProtocolError, RemoteError, RequestTimeout
from mlsup.ipc.client import AsyncClient, Client
from mlsup.ipc.endpoints import ipc_endpoint, ipc_path
from mlsup.ipc.tensors import TensorCodec
from mlsup.ipc.wire import Kind, Message, decode

from .ipc_helpers import Peer, our_segments

MiB = 1 << 20


def sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).view(np.uint8).reshape(-1).data).hexdigest()


@pytest.mark.parametrize("nbytes", [1024, 60 * 1024, 1 * MiB, 16 * MiB, 256 * MiB])
def test_tensors_cross_both_ways_intact(peer: Peer, nbytes: int) -> None:
    rng = np.random.default_rng(nbytes)
    array = rng.integers(0, 1 << 31, nbytes // 4, dtype=np.int32).reshape(-1, 4)
    with Client(peer.endpoint, timeout=60) as client:
        seen = client.call("digest", array)
        assert seen == {"sha256": sha256(array), "dtype": "int32"}
        back = client.call("echo", {"x": array, "meta": [1, "two"]})
        assert back["meta"] == [1, "two"]
        assert back["x"].dtype == np.int32 and back["x"].shape == array.shape
        assert np.array_equal(back["x"], array)


def test_many_dtypes_and_shapes_round_trip(peer: Peer) -> None:
    arrays = [
        np.array(True),
        np.zeros((0, 3), dtype=np.float32),
        np.arange(12, dtype=np.float16).reshape(3, 4),
        np.arange(10, dtype=np.uint64)[::2],  # not contiguous: sent as a contiguous copy
        (np.arange(6) + 1j).astype(np.complex128),
        np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    ]
    with Client(peer.endpoint, timeout=10) as client:
        back = client.call("echo", arrays)
    for sent, got in zip(arrays, back, strict=True):
        assert got.dtype == sent.dtype and got.shape == sent.shape
        assert np.array_equal(got, sent)


def test_a_small_reply_array_travels_inside_the_header(peer: Peer) -> None:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.RCVTIMEO, 10_000)
    sock.connect(peer.endpoint)
    try:
        sock.send_multipart(TensorCodec(None).encode(Message(Kind.REQUEST, 4, "double", [1, 2]))[0])
        frames = sock.recv_multipart()
    finally:
        sock.close(linger=0)
    reply = decode(frames)
    assert len(frames) == 1 and reply.tensors == []  # no frame, no descriptor
    assert np.array_equal(reply.args, [2, 4]) and reply.args.flags.writeable


def test_torch_tensors_come_back_as_torch(peer: Peer) -> None:
    torch = pytest.importorskip("torch")
    tensor = torch.arange(1 << 18, dtype=torch.float32).reshape(512, 512)
    half = torch.linspace(0, 1, 1 << 17).to(torch.bfloat16)
    with Client(peer.endpoint, timeout=10) as client:
        back = client.call("echo", {"t": tensor, "b": half})
    assert isinstance(back["t"], torch.Tensor) and torch.equal(back["t"], tensor)
    assert back["b"].dtype == torch.bfloat16 and torch.equal(back["b"], half)
    with Client(peer.endpoint, timeout=10) as client:
        small = torch.arange(4, dtype=torch.int16)  # a frame: torch tensors are never inlined
        assert torch.equal(client.call("echo", small), small)


def test_reply_blocks_are_borrowed_until_the_caller_drops_them(peer: Peer) -> None:
    array = np.ones(4 * MiB, dtype=np.uint8)
    with Client(peer.endpoint, timeout=10) as client:
        back = client.call("echo", array)
        view = back[10:20]  # a derived view keeps the block borrowed
        del back
        gc.collect()
        assert client.call("lent") == 1
        assert view.sum() == 10
        del view
        gc.collect()
        client.call("echo", 0)  # carries the release
        assert client.call("lent") == 0


def test_blocks_of_a_dead_borrower_are_taken_back(start_peer: Callable[..., Peer]) -> None:
    peer = start_peer(interval=0.2)
    code = (
        "import numpy as np, os, sys\n"
        "from mlsup.ipc.client import Client\n"
        "c = Client(sys.argv[1], timeout=10)\n"
        "kept = c.call('echo', np.ones(1 << 22, dtype=np.uint8))\n"
        "print('holding', flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", code, peer.endpoint], capture_output=True, text=True, check=False
    )
    assert out.stdout.strip() == "holding" and out.returncode == -signal.SIGKILL
    with Client(peer.endpoint, timeout=10) as client:
        deadline = time.monotonic() + 10
        while client.call("lent") != 0:
            assert time.monotonic() < deadline, "the dead borrower's block was never taken back"
            time.sleep(0.05)


def test_errors_arrive_typed_and_the_server_keeps_serving(peer: Peer) -> None:
    with Client(peer.endpoint, timeout=10) as client:
        with pytest.raises(ModelOOM, match="CUDA out of memory") as oom:
            client.call("oom")
        assert oom.value.context["model"] == "m"
        with pytest.raises(RemoteError, match="ZeroDivisionError") as bug:
            client.call("bug")
        assert bug.value.context["remote_type"] == "ZeroDivisionError"
        with pytest.raises(ProtocolError, match="unknown operation 'nope'"):
            client.call("nope")
        with pytest.raises(ProtocolError, match="cannot travel"):
            client.call("echo", object())
        assert client.call("echo", "still here") == "still here"


def test_streams_deliver_in_order_and_end_with_errors(peer: Peer) -> None:
    with Client(peer.endpoint, timeout=10) as client:
        assert list(client.stream("count", 5)) == [0, 1, 2, 3, 4]
        received = []
        with pytest.raises(ModelOOM, match="mid-stream"):
            for item in client.stream("count_then_fail", 3):
                received.append(item)
        assert received == [0, 1, 2]
        abandoned = client.stream("count", 1000)
        assert next(abandoned) == 0
        abandoned.close()
        assert client.call("echo", 7) == 7


def test_a_dead_or_hung_peer_gives_a_timeout_not_a_hang(peer: Peer, runtime_dir: Path) -> None:
    with Client(ipc_endpoint("nobody-listens"), timeout=0.3) as client:
        started = time.monotonic()
        with pytest.raises(RequestTimeout):
            client.call("echo", 1)
        assert time.monotonic() - started < 5
    with Client(peer.endpoint, timeout=10) as client:
        with pytest.raises(RequestTimeout, match="no reply to 'sleep'"):
            client.call("sleep", 2, timeout=0.3)
        os.kill(peer.pid, signal.SIGSTOP)
        try:
            with pytest.raises(RequestTimeout):
                client.call("echo", 1, timeout=0.3)
        finally:
            os.kill(peer.pid, signal.SIGCONT)
        os.kill(peer.pid, signal.SIGKILL)
        peer.process.wait()
        with pytest.raises(RequestTimeout):
            client.call("echo", np.ones(MiB, dtype=np.uint8), timeout=0.3)


def test_sixteen_threads_share_one_client(peer: Peer) -> None:
    errors: list[BaseException] = []
    with Client(peer.endpoint, timeout=30) as client:

        def work(n: int) -> None:
            try:
                for i in range(25):
                    array = np.full(1000 + (i % 3) * 40000, n, dtype=np.int64)
                    back = client.call("double", array)
                    assert np.array_equal(back, array * 2)
                    assert client.call("echo", {"n": n, "i": i}) == {"n": n, "i": i}
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert not errors, errors[:3]


async def test_async_client_with_many_tasks(peer: Peer) -> None:
    async with AsyncClient(peer.endpoint, timeout=30) as client:

        async def work(n: int) -> None:
            array = np.full(100_000, n, dtype=np.float32)
            back = await client.call("double", array)
            assert np.array_equal(back, array * 2)
            assert await client.call("echo", [n]) == [n]

        await asyncio.gather(*(work(n) for n in range(32)))
        assert [item async for item in client.stream("count", 4)] == [0, 1, 2, 3]
        with pytest.raises(ModelOOM):
            await client.call("oom")
        with pytest.raises(RequestTimeout):
            await client.call("sleep", 2, timeout=0.2)


def test_runtime_dir_and_socket_are_private(peer: Peer, runtime_dir: Path) -> None:
    assert stat.S_IMODE(runtime_dir.stat().st_mode) == 0o700
    path = ipc_path(peer.endpoint)
    assert path is not None and stat.S_IMODE(path.stat().st_mode) == 0o600
    with Client(peer.endpoint, timeout=10) as client:
        back = client.call("echo", np.ones(MiB, dtype=np.uint8))
        (segment,) = our_segments(peer.pid)
        assert stat.S_IMODE(os.stat(f"/dev/shm/{segment}").st_mode) == 0o600
        del back


def test_a_closed_server_removes_its_socket_and_segments(peer: Peer) -> None:
    with Client(peer.endpoint, timeout=10) as client:
        client.call("echo", np.ones(MiB, dtype=np.uint8))
    peer.stop()
    path = ipc_path(peer.endpoint)
    assert path is not None and not path.exists()
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"mlsup-{peer.pid}-")]


@pytest.mark.gpu
def test_cuda_tensors_travel_by_ipc_handle(peer: Peer) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    tensor = torch.arange(1 << 20, dtype=torch.float32, device="cuda").reshape(1024, 1024)
    with Client(peer.endpoint, timeout=30) as client:
        # The peer gets a CUDA tensor sharing our memory, and its digest is of the same bytes.
        seen = client.call("digest", tensor)
        assert seen["sha256"] == sha256(tensor.cpu().numpy())
        back = client.call("echo", tensor)
    assert back.is_cuda and torch.equal(back, tensor)
