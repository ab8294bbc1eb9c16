"""Unit-test fixtures: ``side``, the two drivers of the call core seen alike, so that a test
runs the same scenario through threads and asyncio on a fake transport."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any

import pytest

from mlsup.errors import MlsupError
from mlsup.testing.transport import AsyncFakeTransport, FakeTransport


class Sync:
    """The threads driver: calls return their results."""

    name = "sync"

    def __init__(self) -> None:
        self.transport: FakeTransport = FakeTransport()

    def do(self, outcome: Any) -> Any:
        """The outcome of a call (an awaitable on the async side)."""
        assert not inspect.isawaitable(outcome)
        return outcome

    def pieces(self, stream: Any, limit: int | None = None) -> tuple[list[Any], MlsupError | None]:
        """The items of a stream (at most limit, then abandoned), and the error that ended it."""
        items: list[Any] = []
        iterator: Iterator[Any] = iter(stream)
        try:
            for item in iterator:
                items.append(item)
                if limit is not None and len(items) == limit:
                    iterator.close()  # type: ignore[attr-defined]
                    break
        except MlsupError as exc:
            return items, exc
        return items, None


class Async:
    """The asyncio driver: each call runs in an event loop of its own (the fake transport is
    bound to none)."""

    name = "async"

    def __init__(self) -> None:
        self.transport: FakeTransport = AsyncFakeTransport()

    def do(self, outcome: Awaitable[Any]) -> Any:
        async def wait() -> Any:
            return await outcome

        return asyncio.run(wait())

    def pieces(self, stream: Any, limit: int | None = None) -> tuple[list[Any], MlsupError | None]:
        async def collect() -> tuple[list[Any], MlsupError | None]:
            items: list[Any] = []
            iterator: AsyncIterator[Any] = await stream if inspect.isawaitable(stream) else stream
            try:
                async for item in iterator:
                    items.append(item)
                    if limit is not None and len(items) == limit:
                        await iterator.aclose()  # type: ignore[attr-defined]
                        break
            except MlsupError as exc:
                return items, exc
            return items, None

        return asyncio.run(collect())


@pytest.fixture(params=[Sync, Async], ids=["sync", "async"])
def side(request: pytest.FixtureRequest) -> Sync | Async:
    """Each driver in turn, with a fresh fake transport."""
    made: Sync | Async = request.param()
    return made
