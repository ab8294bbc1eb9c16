"""The client's call core on a fake transport, through both drivers: reply matching, deadlines,
lost peers, streams, shared-memory loans and channel reuse — no processes, no sockets."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from mlsup.errors import ModelOOM, PeerGone, ProtocolError, RequestTimeout, TransportError
from mlsup.ipc.client import AsyncClient, Client
from mlsup.ipc.wire import Kind, Message
from mlsup.testing.transport import AsyncFakeTransport

ENDPOINT = "ipc:///fake/peer"


def client_for(side: Any, **options: Any) -> Any:
    factory = AsyncClient if side.name == "async" else Client
    return factory(ENDPOINT, transport=side.transport, **options)


def answer(request: Message, args: Any) -> list[Message]:
    """A peer that answers each operation as its name says."""
    if request.op == "echo":
        return [Message(Kind.REPLY, request.id, args=args)]
    if request.op == "late":  # a reply to an earlier request arrives first
        return [Message(Kind.REPLY, request.id - 1, args="late"),
                Message(Kind.REPLY, request.id, args="mine")]  # fmt: skip
    if request.op == "count":
        items = [Message(Kind.ITEM, request.id, args=i) for i in range(args)]
        return [*items, Message(Kind.REPLY, request.id)]
    if request.op == "count_then_oom":
        items = [Message(Kind.ITEM, request.id, args=i) for i in range(args)]
        return [*items, Message(Kind.ERROR, request.id, error=ModelOOM("mid-stream").to_wire())]
    if request.op == "oom":
        return [Message(Kind.ERROR, request.id, error=ModelOOM("CUDA out of memory").to_wire())]
    return []  # "hang": never answers


def test_a_call_gets_its_answer_and_reuses_its_channel(side: Any) -> None:
    side.transport.listen(ENDPOINT, answer)
    client = client_for(side, timeout=5)
    assert side.do(client.call("echo", {"x": [1, 2]})) == {"x": [1, 2]}
    assert side.do(client.call("echo", "again")) == "again"
    assert len(side.transport.channels) == 1  # the first call's channel served the second
    with pytest.raises(ModelOOM, match="CUDA out of memory"):
        side.do(client.call("oom"))
    assert side.do(client.call("late")) == "mine"  # the stale reply was dropped
    side.do(client.close())
    assert side.transport.open_channels == 0


def test_a_hung_peer_times_out_at_the_deadline_and_its_channel_is_dropped(side: Any) -> None:
    side.transport.listen(ENDPOINT, answer)
    client = client_for(side, timeout=300)
    with pytest.raises(RequestTimeout, match="no reply to 'hang'"):
        side.do(client.call("hang"))
    # On the fake clock: the deadline, not a slice less, and at most one slice more.
    assert 300 <= side.transport.now <= 300.03
    assert side.transport.open_channels == 0  # a late reply could still come: never reused
    assert side.do(client.call("echo", 1, timeout=1)) == 1


def test_a_dead_peer_is_peer_gone_within_a_slice(side: Any) -> None:
    side.transport.listen(ENDPOINT, answer, pid=42)
    client = client_for(side, timeout=300)
    side.transport.kill(42)
    with pytest.raises(PeerGone, match="died during 'echo'"):
        side.do(client.call("echo", 1, alive=lambda: side.transport.alive(42)))
    assert side.transport.now <= 0.03


def test_streams_deliver_in_order_end_with_errors_and_can_be_abandoned(side: Any) -> None:
    side.transport.listen(ENDPOINT, answer)
    client = client_for(side, timeout=5)
    assert side.pieces(client.stream("count", 4)) == ([0, 1, 2, 3], None)
    items, error = side.pieces(client.stream("count_then_oom", 2))
    assert items == [0, 1] and isinstance(error, ModelOOM)
    assert side.pieces(client.stream("count", 100), limit=1) == ([0], None)
    # Both finished streams used one channel; the abandoned one closed it (items may follow).
    assert len(side.transport.channels) == 1 and side.transport.open_channels == 0
    with pytest.raises(ProtocolError, match="streams its result"):
        side.do(client.call("count", 2))


def test_request_tensors_are_lent_then_taken_back_or_discarded(side: Any) -> None:
    side.transport.listen(ENDPOINT, answer)
    client = client_for(side, timeout=1, threshold=1024)
    big = np.arange(4096, dtype=np.int64)
    np.testing.assert_array_equal(side.do(client.call("echo", big)), big)
    assert client.core.lent_bytes == 0  # answered: the block is back in the pool
    with pytest.raises(RequestTimeout):
        side.do(client.call("hang", big))
    assert client.core.lent_bytes == 0  # unanswered: discarded, never reused
    side.do(client.close())


def test_a_closed_client_refuses_calls(side: Any) -> None:
    side.transport.listen(ENDPOINT, answer)
    client = client_for(side, timeout=1)
    side.do(client.close())
    side.do(client.close())  # closing twice is harmless
    with pytest.raises(TransportError, match="is closed"):
        side.do(client.call("echo", 1))


def test_a_failed_send_is_thrown_into_the_plan_which_drops_the_channel(side: Any) -> None:
    def unreachable(request: Message, args: Any) -> list[Message]:
        raise TransportError("cannot send to the peer")

    side.transport.listen(ENDPOINT, unreachable)
    client = client_for(side, timeout=5, threshold=1024)
    with pytest.raises(TransportError, match="cannot send"):
        side.do(client.call("echo", np.arange(4096, dtype=np.int64)))
    assert side.transport.open_channels == 0 and client.core.lent_bytes == 0


async def test_cancelling_an_async_call_cleans_up_like_a_timeout() -> None:
    transport = AsyncFakeTransport()
    transport.listen(ENDPOINT, answer)
    client = AsyncClient(ENDPOINT, transport=transport, timeout=1e9, threshold=1024)
    task = asyncio.create_task(client.call("hang", np.arange(4096, dtype=np.int64)))
    while not transport.received:  # the request went out; the call waits for its answer
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert transport.open_channels == 0 and client.core.lent_bytes == 0
    await client.close()
