"""The serving side of the IPC benchmark, run as ``python -m mlsup.bench.ipc_peer MODE ENDPOINT``.

Modes: ``mlsup`` (our Server: echo and touch), ``rep`` (raw pyzmq REP echo), ``pickle``
(raw REP that unpickles an array and answers its length). Prints ``ready`` once bound.
"""

from __future__ import annotations

import pickle
import sys
from typing import Any

import zmq

from mlsup.ipc.server import Server


def _touch(args: Any) -> int:
    # Read one byte a page: the receiver really maps the data, as a model would.
    return int(args.reshape(-1).view("uint8")[::4096].sum())


def main(mode: str, endpoint: str) -> None:
    if mode == "mlsup":
        server = Server(endpoint)
        server.register("echo", lambda args: args)
        server.register("touch", _touch)
        server.bind()
        print("ready", flush=True)
        try:
            server.serve()
        finally:
            server.close()
        return
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = context.socket(zmq.REP)
    sock.bind(endpoint)
    print("ready", flush=True)
    while True:
        if mode == "rep":
            sock.send(sock.recv())
        else:
            frame = sock.recv(copy=False)
            array = pickle.loads(frame.buffer)  # our own benchmark's bytes: the baseline itself
            sock.send(str(_touch(array)).encode())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
