"""A caller that walks away from a stream stops the generation in the server (a worker must not
keep decoding tokens nobody will read), and the server goes on serving."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlsup.ipc.client import AsyncClient, Client
from mlsup.ipc.endpoints import ipc_endpoint
from mlsup.ipc.server import Server


class Endless:
    """A stream operation that yields until closed, and says when it was closed."""

    def __init__(self) -> None:
        self.closed = threading.Event()
        self.produced = 0

    def __call__(self, args: object) -> Iterator[int]:
        def items() -> Iterator[int]:
            try:
                while True:
                    self.produced += 1
                    yield self.produced
            finally:
                self.closed.set()

        return items()


@pytest.fixture
def served(runtime_dir: Path) -> Iterator[tuple[Server, Endless]]:
    endless = Endless()
    server = Server(ipc_endpoint("cancel"))
    server.register("endless", endless, stream=True)
    server.register("echo", lambda args: args)
    server.start()
    yield server, endless
    server.close()


def test_closing_a_sync_stream_stops_the_generator(served: tuple[Server, Endless]) -> None:
    server, endless = served
    with Client(server.endpoint, timeout=10) as client:
        items = client.stream("endless")
        assert [next(items), next(items)] == [1, 2]
        items.close()  # the caller walks away
        assert endless.closed.wait(10), "the server kept generating for nobody"
        assert client.call("echo", "still serving") == "still serving"


async def test_cancelling_an_async_stream_stops_the_generator(
    served: tuple[Server, Endless],
) -> None:
    server, endless = served
    async with AsyncClient(server.endpoint, timeout=10) as client:
        items = client.stream("endless").__aiter__()
        assert await items.__anext__() == 1
        await items.aclose()
        assert endless.closed.wait(10), "the server kept generating for nobody"
        assert await client.call("echo", [1, 2]) == [1, 2]
