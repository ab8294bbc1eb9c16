"""Hostile frames sent to a live server get ProtocolError replies; the server keeps serving."""

from __future__ import annotations

import pickle

import msgpack
import numpy as np
import pytest
import zmq

from mlsup.errors import ProtocolError, error_from_wire
from mlsup.ipc.client import Client
from mlsup.ipc.wire import Kind, decode

from .ipc_helpers import Peer

FRAME = np.arange(6, dtype=np.float32).tobytes()


def header(**changes: object) -> bytes:
    fields = {
        "v": 1, "k": 1, "id": 9, "op": "echo", "r": None, "e": None,
        "t": [{"dtype": "float32", "shape": [6], "place": "frame", "frame": 0, "nbytes": 24}],
        "a": msgpack.ExtType(1, b"\0\0\0\0"),
    }  # fmt: skip
    fields.update(changes)
    return msgpack.packb(list(fields.values()))


def shm_descriptor(segment: str, offset: int = 0, nbytes: int = 24) -> list[dict[str, object]]:
    return [
        {
            "dtype": "float32",
            "shape": [nbytes // 4],
            "place": "shm",
            "segment": segment,
            "offset": offset,
            "nbytes": nbytes,
        }
    ]


CASES = {
    "truncated header": [header()[:-5], FRAME],
    "wrong nbytes": [header(), FRAME[:-4]],
    "pickle payload": [pickle.dumps(("echo", [1, 2])), FRAME],
    "foreign segment": [header(t=shm_descriptor("PostgreSQL.2187177382"))],
    "path segment": [header(t=shm_descriptor("../../dev/null"))],
    "missing segment": [header(t=shm_descriptor("mlsup-1-1-0123456789abcdef"))],
    "out of bounds": [header(t=shm_descriptor("SELF", offset=1 << 40))],
    "not a request": [header(k=int(Kind.REPLY)), FRAME],
    "empty": [b""],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_frames_get_protocol_errors(peer: Peer, case: str) -> None:
    frames = CASES[case]
    with Client(peer.endpoint, timeout=10) as client:
        if case == "out of bounds":
            # A real segment of ours, addressed beyond its end.
            back = client.call("echo", np.ones(1 << 20, dtype=np.uint8))
            segment = next(iter(client.core._codec.cache._maps))
            frames = [header(t=shm_descriptor(segment, offset=1 << 40))]
            del back
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.RCVTIMEO, 10_000)
        sock.connect(peer.endpoint)
        try:
            sock.send_multipart(frames)
            reply = decode(sock.recv_multipart())
        finally:
            sock.close(linger=0)
        assert reply.kind is Kind.ERROR
        assert isinstance(error_from_wire(reply.error), ProtocolError)
        assert client.call("echo", {"still": "serving"}) == {"still": "serving"}
