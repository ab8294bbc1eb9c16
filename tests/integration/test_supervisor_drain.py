"""A drain (unload, preemption) ends when its worker exits, not when the grace runs out."""

from __future__ import annotations

from pathlib import Path

from mlsup.bench.supervised import probe_model
from mlsup.ipc.shm import sweep_orphans
from mlsup.testing.redis import TestRedis
from mlsup.testing.supervisor import RunningSupervisor, manifest

MODELS = probe_model("background", vram_mb=800, priority="low", idle_timeout_s=0) + probe_model(
    "urgent", vram_mb=600, priority="high", idle_timeout_s=0
)


def test_drains_end_at_the_workers_exit_within_a_long_grace(
    tmp_path: Path, redis_server: TestRedis, redis_prefix: str
) -> None:
    # A worker exits at once on SIGTERM. With a 300 s grace, a drain that missed that exit
    # (its wait lost the process sentinel) would outlast unload's 60 s deadline.
    config = manifest(redis_server.url, redis_prefix, MODELS, terminate_grace_s=300)
    supervisor = RunningSupervisor(tmp_path, config).start()
    try:
        with supervisor.client(timeout=60) as client:
            for _ in range(3):
                client.load("background")
                row = client.unload("background")
                assert row["state"] == "unloaded" and row["exit_code"] == 0
            client.load("background")
            assert client.load("urgent")["state"] == "ready"
            victim = supervisor.row("background")
        assert victim["state"] == "unloaded" and victim["reason"] == "preempted"
        assert victim["exit_code"] == 0  # it exited on SIGTERM; nothing was killed
    finally:
        supervisor.stop()
        sweep_orphans()
