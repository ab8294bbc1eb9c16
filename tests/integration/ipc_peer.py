"""A real server process for the IPC tests: ``python ipc_peer.py ENDPOINT [CHECK_INTERVAL]``.

Prints ``ready <pid>`` once bound, then serves until SIGTERM.
"""

from __future__ import annotations

import hashlib
import signal
import sys
import time
from typing import Any

import numpy as np

from mlsup.errors import ModelOOM
from mlsup.ipc.server import Server


def digest(array: Any) -> str:
    if hasattr(array, "cpu"):  # a torch tensor, maybe on the GPU
        array = array.cpu().numpy()
    return hashlib.sha256(np.ascontiguousarray(array).view(np.uint8).reshape(-1).data).hexdigest()


def main() -> None:
    interval = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
    server = Server(sys.argv[1], borrower_check_interval=interval)
    server.register("echo", lambda args: args)
    server.register(
        "digest",
        lambda args: {"sha256": digest(args), "dtype": str(args.dtype).removeprefix("torch.")},
    )
    server.register("double", lambda args: np.asarray(args) * 2)
    server.register("sleep", time.sleep)

    def oom(args: Any) -> None:
        raise ModelOOM("CUDA out of memory", model="m")

    server.register("oom", oom)
    server.register("bug", lambda args: 1 / 0)
    server.register("lent", lambda args: server.lent_blocks)
    server.register("count", lambda n: iter(range(n)), stream=True)

    def failing_stream(n: int) -> Any:
        yield from range(n)
        raise ModelOOM("out of memory mid-stream", model="m")

    server.register("count_then_fail", failing_stream, stream=True)
    signal.signal(signal.SIGTERM, lambda *_: server.stop(timeout=0))
    server.bind()
    print(f"ready {server.endpoint}", flush=True)
    try:
        server.serve()
    finally:
        server.close()


if __name__ == "__main__":
    main()
