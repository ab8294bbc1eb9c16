"""The layout the gateway does NOT use, for ``mlsup bench http`` to measure against: the
supervisor and the gateway on one event loop in one process.

``python -m mlsup.bench.gateway_inprocess CONFIG PORT`` runs it until the supervisor is told to
stop (``mlsup stop`` or the proxy's ``stop()``).
"""

from __future__ import annotations

import asyncio
import sys

__all__ = ["main"]


async def _run(config_path: str, port: int) -> None:
    import uvicorn

    from mlsup.gateway.app import create_app
    from mlsup.supervisor.config import SupervisorConfig
    from mlsup.supervisor.daemon import Supervisor

    config = SupervisorConfig.load(config_path)
    supervisor = Supervisor(config, log=lambda line: print(line, flush=True), sidecars=[])
    await supervisor.start()
    app = create_app(runtime=str(config.paths.root))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    serving = asyncio.ensure_future(server.serve())
    print("ready (supervisor and gateway in one process)", flush=True)
    try:
        await supervisor.serve()
    finally:
        server.should_exit = True
        await serving


def main(argv: list[str]) -> int:
    asyncio.run(_run(argv[0], int(argv[1])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
