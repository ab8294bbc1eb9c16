"""The queue runner: the supervisor's sidecar that serves every ``[queues.<name>]``.

``python -m mlsup.queues --runtime DIR --config PATH`` connects to the supervisor of ``DIR``
through the async proxy, runs one BullMQ worker per queue on the supervisor's Redis, and
stops on SIGTERM (or when the supervisor that started it is gone): running jobs finish, the
others stay waiting in Redis for the next start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlsup import defaults
from mlsup.errors import MlsupError
from mlsup.ipc.liveness import process_alive
from mlsup.kit.redis_url import resolve_redis_url
from mlsup.proxy import AsyncSupervisorProxy, aconnect
from mlsup.queues.config import load_queues, queue_prefix
from mlsup.queues.jobdata import JobCall
from mlsup.queues.processor import JobProcessor, ModelCall
from mlsup.queues.workers import QueueWorkers
from mlsup.runtime import ENV_RUNTIME_DIR
from mlsup.supervisor.sidecars import SUPERVISOR_PID_ENV

__all__ = ["main", "proxy_call", "serve"]

log = logging.getLogger("mlsup.queues")


def proxy_call(proxy: AsyncSupervisorProxy, model_id: str) -> ModelCall:
    """Calls on a supervised model, through the proxy's one async call path."""
    model = proxy.model(model_id)

    async def call(plan: JobCall) -> Any:
        return await model.call(plan.op, *plan.args, **plan.kwargs)

    return call


async def serve(config: Path, runtime: Path) -> None:
    """Serve the queues of ``config`` with the supervisor of ``runtime`` until told to stop."""
    os.environ[ENV_RUNTIME_DIR] = str(runtime)  # where the embedded Redis' URL is published
    manifest, queues = load_queues(config)
    if not queues:
        log.info("no [queues.<name>] in %s: nothing to serve", manifest.source)
        return
    url = resolve_redis_url(manifest.redis.url)
    prefix = queue_prefix(manifest.redis.prefix)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    proxy = await aconnect(runtime)
    try:
        processors = [JobProcessor(spec, proxy_call(proxy, spec.model)) for spec in queues.values()]
        async with QueueWorkers(processors, url, prefix) as workers:
            served = ", ".join(
                f"{q.name} ({q.model}.{q.op} x{q.concurrency})" for q in queues.values()
            )
            log.info("serving %s under key prefix %r", served, prefix)
            await _first(stop.wait(), workers.wait(), _supervisor_gone())
            log.info("stopping: running jobs finish, waiting ones stay in Redis")
    finally:
        await proxy.close()


async def _supervisor_gone() -> None:
    pid = int(os.environ.get(SUPERVISOR_PID_ENV) or 0)
    if not pid:
        await asyncio.Event().wait()  # run by hand: only a signal stops it
    while process_alive(pid):
        await asyncio.sleep(defaults.GATEWAY_PARENT_CHECK_S)
    log.info("supervisor pid %d is gone", pid)


async def _first(*awaitables: Any) -> None:
    """Until the first awaitable ends (its error raised); the others are cancelled."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mlsup.queues``; the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m mlsup.queues",
        description="Serve the [queues.<name>] of mlsup.toml with a running supervisor's "
        "models (the supervisor starts this itself; run it by hand only to debug).",
    )
    parser.add_argument("--runtime", type=Path, required=True, help="the supervisor's runtime dir")
    parser.add_argument("--config", type=Path, required=True, help="its mlsup.toml")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="mlsup.queues: %(message)s", stream=sys.stderr)
    try:
        asyncio.run(serve(args.config, args.runtime))
    except MlsupError as exc:
        print(f"mlsup.queues: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
