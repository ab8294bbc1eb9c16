"""Lease enforcement against the real NVML reading: needs an NVIDIA GPU (``pytest -m gpu``,
run by ``benchmarks/gpu-check.sh``); skipped elsewhere."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from mlsup.kit.devices import discover_nvml
from mlsup.kit.vram_usage import NvmlUsage
from mlsup.testing.redis import TestRedis
from mlsup.testing.supervisor import RunningSupervisor

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(discover_nvml() is None, reason="needs an NVIDIA GPU (NVML finds none)"),
]


def test_nvml_reads_this_processs_vram() -> None:
    import torch

    held = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    try:
        assert NvmlUsage().read().get(os.getpid(), 0) >= 256
    finally:
        del held
        torch.cuda.empty_cache()


def test_a_worker_outgrowing_its_lease_on_a_real_gpu_is_re_leased_at_its_peak(
    tmp_path: Path, redis_server: TestRedis, redis_prefix: str
) -> None:
    config = f"""
[redis]
url = "{redis_server.url}"
prefix = "{redis_prefix}"

[supervisor]
heartbeat_s = 0.2
vram_over_margin_mb = 100
vram_over_for_s = 1.0

[models.greedy]
loader = "probe"
path = "probe.txt"
vram_mb = 200
idle_timeout_s = 0
options = {{ cuda_mb = 600 }}
"""
    supervisor = RunningSupervisor(tmp_path, config).start()
    try:
        with supervisor.client(timeout=60) as client:
            first = client.load("greedy", timeout=120)["pid"]
        row: dict[str, Any] = supervisor.wait_for(
            "greedy", lambda r: r["state"] == "ready" and r["pid"] != first, timeout=120
        )
        assert row["exit_reason"] == "oom" and row["leased_mb"] >= 600
        assert row["reason"].startswith("oom: used ")
    finally:
        supervisor.stop()
