"""``python -m mlsup.gateway --listen HOST:PORT``: the gateway process, as the supervisor starts
it (a sidecar). The API key comes from ``$MLSUP_GATEWAY_API_KEY``; the supervisor from
``$MLSUP_RUNTIME_DIR``. It exits when the supervisor that started it is gone."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence

from mlsup import defaults
from mlsup.errors import MlsupError
from mlsup.gateway.settings import API_KEY_ENV, parse_listen
from mlsup.ipc.liveness import process_alive

__all__ = ["main"]

SUPERVISOR_PID_ENV = "MLSUP_SUPERVISOR_PID"


async def _watch_supervisor(pid: int) -> None:
    """SIGTERM ourselves (uvicorn then shuts down cleanly) once the supervisor is gone."""
    while process_alive(pid):
        await asyncio.sleep(defaults.GATEWAY_PARENT_CHECK_S)
    print(f"mlsup gateway: the supervisor (pid {pid}) is gone; stopping", flush=True)
    os.kill(os.getpid(), signal.SIGTERM)


async def _serve(host: str, port: int, max_queue: int, queues_config: str | None) -> None:
    import uvicorn

    from mlsup.gateway.app import create_app

    app = create_app(
        api_key=os.environ.get(API_KEY_ENV) or None, max_queue=max_queue, config=queues_config
    )
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, lifespan="on",
        timeout_graceful_shutdown=int(defaults.GATEWAY_SHUTDOWN_GRACE_S),
    )  # fmt: skip
    server = uvicorn.Server(config)
    watch = None
    if os.environ.get(SUPERVISOR_PID_ENV):
        watch = asyncio.ensure_future(_watch_supervisor(int(os.environ[SUPERVISOR_PID_ENV])))
    shown = f"[{host}]" if ":" in host else host
    print(f"mlsup gateway: serving the OpenAI API on http://{shown}:{port}/v1", flush=True)
    try:
        await server.serve()
    finally:
        if watch is not None:
            watch.cancel()
    if not server.started:
        raise SystemExit(1)  # could not bind (uvicorn said why)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlsup.gateway",
        description="The OpenAI-compatible HTTP gateway of a running supervisor "
        "(normally started by `mlsup start --http ADDR`).",
    )
    parser.add_argument("--listen", default="8000", help="PORT (loopback) or HOST:PORT")
    parser.add_argument(
        "--max-queue", type=int, default=defaults.GATEWAY_MAX_QUEUE, help="per-model queue bound"
    )
    parser.add_argument(
        "--config", metavar="PATH", help="the supervisor's mlsup.toml: its [queues] join /metrics"
    )
    args = parser.parse_args(argv)
    try:
        host, port = parse_listen(args.listen)
        asyncio.run(_serve(host, port, args.max_queue, args.config))
    except MlsupError as exc:
        print(f"mlsup gateway: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
