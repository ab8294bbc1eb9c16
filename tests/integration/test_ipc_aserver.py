"""The asyncio control-plane server over real sockets: concurrent requests, and structured
concurrency — cancelling serve() cancels the requests in progress, and a request task that
fails outside its handler ends serve() with the error instead of vanishing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from mlsup.errors import ModelOOM, RequestTimeout
from mlsup.ipc.aserver import AsyncServer
from mlsup.ipc.client import AsyncClient
from mlsup.ipc.endpoints import ipc_endpoint, ipc_path


async def test_requests_run_concurrently_and_cancel_with_serve(runtime_dir: Path) -> None:
    server = AsyncServer(ipc_endpoint("control", runtime_dir))
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow(args: Any) -> Any:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def echo(args: Any) -> Any:
        return args

    async def oom(args: Any) -> Any:
        raise ModelOOM("CUDA out of memory", model="m")

    for op, handler in (("slow", slow), ("echo", echo), ("oom", oom)):
        server.register(op, handler)
    serving = asyncio.create_task(server.serve())
    async with AsyncClient(server.endpoint, timeout=30) as client:
        pending = asyncio.create_task(client.call("slow"))
        await started.wait()
        # The slow request does not hold up the others, nor does a failing one.
        assert await client.call("echo", {"n": 1}) == {"n": 1}
        with pytest.raises(ModelOOM):
            await client.call("oom")
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await serving
        assert cancelled.is_set()  # the request in progress was cancelled, and awaited
        pending.cancel()
    await server.close()
    path = ipc_path(server.endpoint)
    assert path is not None and not path.exists()


async def test_a_failing_request_task_ends_serve_with_its_error(
    runtime_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = AsyncServer(ipc_endpoint("control", runtime_dir))

    async def echo(args: Any) -> Any:
        return args

    async def broken_send(*args: Any) -> None:
        raise RuntimeError("a bug in the reply path")

    server.register("echo", echo)
    monkeypatch.setattr(server, "_send", broken_send)
    serving = asyncio.create_task(server.serve())
    async with AsyncClient(server.endpoint, timeout=0.5) as client:
        with pytest.raises(RequestTimeout, match="no reply"):
            await client.call("echo", 1)
    with pytest.raises(Exception) as failed:  # an ExceptionGroup (a 3.11 name; ruff targets 3.10)
        await serving
    assert failed.group_contains(RuntimeError, match="a bug in the reply path")
    await server.close()
