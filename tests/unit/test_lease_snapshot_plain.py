"""``GpuSnapshot.plain()``: what the control plane's ``gpus`` operation sends (pure)."""

from __future__ import annotations

import msgpack

from mlsup.kit.leases.snapshot import gpu_snapshot


def lease_fields(lease_id: str, vram_mb: int, priority: int, **extra: str) -> dict[str, str]:
    fields = {
        "id": lease_id,
        "vram_mb": str(vram_mb),
        "priority": str(priority),
        "model_id": f"model-{lease_id}",
        "owner": "host:10",
        "pid": "10",
        "host": "host",
        "epoch": "3",
        "created": "1000",
        "expiry": "11000",
    }
    fields.update(extra)
    return fields


def test_plain_carries_capacity_leases_preemptions_and_waiters() -> None:
    listing = (
        2000,
        1000,
        [lease_fields("b", 300, 1, preempt_deadline="5000"), lease_fields("a", 200, 2)],
        [("w1", 600, 3), ("w2", 100, 1)],
    )
    plain = gpu_snapshot(0, listing).plain()
    assert (plain["gpu"], plain["capacity_mb"], plain["used_mb"], plain["free_mb"]) == (
        0,
        1000,
        500,
        500,
    )
    a, b = plain["leases"]
    assert (a["id"], a["priority"], a["preempt_in_s"], a["age_s"]) == ("a", "high", None, 1.0)
    assert (b["id"], b["priority"], b["preempt_in_s"]) == ("b", "normal", 3.0)
    assert plain["waiting"] == [
        {"id": "w1", "vram_mb": 600, "priority": "critical"},
        {"id": "w2", "vram_mb": 100, "priority": "normal"},
    ]
    # Plain data: it crosses the control socket as msgpack.
    assert msgpack.unpackb(msgpack.packb(plain)) == plain


def test_an_idle_gpu_is_listed_with_its_capacity() -> None:
    plain = gpu_snapshot(1, (0, 800, [], [])).plain()
    assert (plain["capacity_mb"], plain["free_mb"], plain["leases"], plain["waiting"]) == (
        800,
        800,
        [],
        [],
    )
