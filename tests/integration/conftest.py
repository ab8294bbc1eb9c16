from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ipc_helpers import Peer

from mlsup.ipc.endpoints import ipc_endpoint
from mlsup.ipc.shm import sweep_orphans


@pytest.fixture
def start_peer(runtime_dir: Path) -> Iterator[Callable[..., Peer]]:
    peers: list[Peer] = []

    def start(name: str = "peer", interval: float = 5.0) -> Peer:
        peer = Peer(ipc_endpoint(name), interval)
        peers.append(peer)
        return peer

    yield start
    for peer in peers:
        peer.stop()
    sweep_orphans()  # what peers killed by a test left behind


@pytest.fixture
def peer(start_peer: Callable[..., Peer]) -> Peer:
    return start_peer()
