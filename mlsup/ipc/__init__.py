"""Inter-process communication: wire format, ZeroMQ request bridge, shared-memory tensors.

* :mod:`mlsup.ipc.wire` — the frame format, pure and strictly validated;
* :mod:`mlsup.ipc.shm` — pooled, pre-faulted POSIX shared memory and the orphan sweep;
* :mod:`mlsup.ipc.tensors` — numpy arrays and torch tensors in and out of messages;
* :class:`Server` / :class:`Client` / :class:`AsyncClient` — the request bridge over ZeroMQ;
  both clients drive one sans-io core (:mod:`mlsup.ipc.callcore`, :mod:`mlsup.ipc.plans`)
  over a transport (:mod:`mlsup.ipc.transport`) that tests replace with a fake.

Depends on neither ``mlsup.kit`` nor ``mlsup.supervisor``.
"""

from mlsup.ipc.client import AsyncClient, Client
from mlsup.ipc.endpoints import check_endpoint, ipc_endpoint
from mlsup.ipc.server import Server
from mlsup.ipc.shm import ShmPool, sweep_orphans

__all__ = [
    "AsyncClient",
    "Client",
    "Server",
    "ShmPool",
    "check_endpoint",
    "ipc_endpoint",
    "sweep_orphans",
]
