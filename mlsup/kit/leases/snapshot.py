"""What holds each GPU, for ``mlsup status`` and for choosing a GPU (pure conversion)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from mlsup.kit.leases.policy import GpuView, Holder
from mlsup.kit.leases.priority import Priority
from mlsup.kit.leases.store import GpuListing

__all__ = ["GpuSnapshot", "LeaseInfo", "gpu_snapshot"]


@dataclass(frozen=True)
class LeaseInfo:
    """One live lease as others see it (no token)."""

    id: str
    gpu: int
    model_id: str
    vram_mb: int
    priority: Priority
    owner: str
    pid: int
    host: str
    epoch: int
    age_s: float
    expires_in_s: float
    preempt_in_s: float | None


@dataclass(frozen=True)
class GpuSnapshot:
    """One GPU: capacity, live leases, and the queue in service order (id, MB, priority)."""

    gpu: int
    capacity_mb: int
    leases: tuple[LeaseInfo, ...]
    waiting: tuple[tuple[str, int, Priority], ...]

    @property
    def used_mb(self) -> int:
        return sum(lease.vram_mb for lease in self.leases)

    @property
    def free_mb(self) -> int:
        return self.capacity_mb - self.used_mb

    def view(self) -> GpuView:
        """The policy's view of this GPU."""
        holders = tuple(
            Holder(x.id, x.vram_mb, int(x.priority), x.preempt_in_s is not None)
            for x in self.leases
        )
        return GpuView(self.gpu, self.capacity_mb, holders, len(self.waiting))

    def plain(self) -> dict[str, Any]:
        """This GPU as plain data for the control plane's ``gpus`` operation: capacity, every
        live lease (``preempt_in_s`` set when it was asked to yield) and the waiters in service
        order. Priorities are their lower-case names."""
        return {
            "gpu": self.gpu,
            "capacity_mb": self.capacity_mb,
            "used_mb": self.used_mb,
            "free_mb": self.free_mb,
            "leases": [
                {**dataclasses.asdict(lease), "priority": lease.priority.name.lower()}
                for lease in self.leases
            ],
            "waiting": [
                {"id": wid, "vram_mb": mb, "priority": prio.name.lower()}
                for wid, mb, prio in self.waiting
            ],
        }


def _lease_info(gpu: int, now_ms: int, fields: dict[str, str]) -> LeaseInfo:
    deadline = fields.get("preempt_deadline")
    return LeaseInfo(
        id=fields["id"],
        gpu=gpu,
        model_id=fields.get("model_id", ""),
        vram_mb=int(fields["vram_mb"]),
        priority=Priority(int(fields["priority"])),
        owner=fields.get("owner", ""),
        pid=int(fields.get("pid", "0")),
        host=fields.get("host", ""),
        epoch=int(fields.get("epoch", "0")),
        age_s=(now_ms - int(fields.get("created", now_ms))) / 1000,
        expires_in_s=(int(float(fields["expiry"])) - now_ms) / 1000,
        preempt_in_s=None if deadline is None else (int(deadline) - now_ms) / 1000,
    )


def gpu_snapshot(gpu: int, listing: GpuListing) -> GpuSnapshot:
    """Build a snapshot from :meth:`LeaseStore.sweep`'s listing."""
    now_ms, capacity, leases, waiters = listing
    infos = tuple(sorted((_lease_info(gpu, now_ms, f) for f in leases), key=lambda x: x.id))
    queue = tuple((wid, mb, Priority(prio)) for wid, mb, prio in waiters)
    return GpuSnapshot(gpu, capacity, infos, queue)
