"""What the lease scripts answer, parsed into typed values (no I/O here)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from mlsup.kit.leases.owner import HolderIdentity
from mlsup.kit.leases.priority import Priority

__all__ = [
    "AdmitOutcome",
    "AdmitResult",
    "LeaseRequest",
    "PreemptNotice",
    "RenewOutcome",
    "RenewResult",
    "parse_admit",
    "parse_renew",
]


@dataclass(frozen=True)
class LeaseRequest:
    """Everything the admission script records about a request and its owner."""

    id: str
    token: str
    gpu: int
    vram_mb: int
    priority: Priority
    model_id: str
    owner: str
    pid: int
    host: str
    start: str
    users: str = ""  #: the processes that use its VRAM (:func:`owner.encode_users`)


class AdmitOutcome(enum.Enum):
    """The kinds of admission replies."""

    GRANTED = "granted"
    QUEUED = "queued"
    NO_GPU = "nogpu"
    TOO_BIG = "too_big"
    NO_FIT = "nofit"
    NOT_HELD = "notheld"


@dataclass(frozen=True)
class AdmitResult:
    """One admission reply. ``retry_ms`` (queued): when the next lease expires or a
    preemption deadline passes, so a waiter looks again then at the latest (-1: none)."""

    outcome: AdmitOutcome
    epoch: int = 0
    now_ms: int = 0
    expiry_ms: int = 0
    capacity_mb: int = 0
    blocked: bool = False
    retry_ms: int = -1
    victims: int = 0
    settling: bool = False
    local_holders: tuple[HolderIdentity, ...] = field(default=())


def parse_admit(reply: list[Any]) -> AdmitResult:
    """Parse the admission script's reply."""
    outcome = AdmitOutcome(reply[0])
    if outcome is AdmitOutcome.GRANTED:
        return AdmitResult(
            outcome, epoch=int(reply[1]), now_ms=int(reply[2]), expiry_ms=int(reply[3])
        )
    if outcome in (AdmitOutcome.TOO_BIG, AdmitOutcome.NO_FIT):
        return AdmitResult(outcome, capacity_mb=int(reply[1]))
    if outcome is AdmitOutcome.QUEUED:
        rest = reply[5:]
        holders = tuple(
            HolderIdentity(str(rest[i]), int(rest[i + 1]), str(rest[i + 2]), str(rest[i + 3]))
            for i in range(0, len(rest) - 3, 4)
        )
        return AdmitResult(
            outcome,
            blocked=bool(int(reply[1])),
            retry_ms=int(reply[2]),
            victims=int(reply[3]),
            settling=bool(int(reply[4])),
            local_holders=holders,
        )
    return AdmitResult(outcome)


@dataclass(frozen=True)
class PreemptNotice:
    """A request to yield, as recorded in ``boss:preempt:{id}``.

    ``deadline_ms`` and ``now_ms`` are Redis time; the lease is revoked at the deadline.
    """

    deadline_ms: int
    now_ms: int
    priority: Priority | None
    requester: str

    @classmethod
    def parse(cls, value: str, now_ms: int) -> PreemptNotice:
        deadline, _, rest = value.partition("|")
        priority, _, requester = rest.partition("|")
        return cls(
            deadline_ms=int(deadline),
            now_ms=now_ms,
            priority=Priority(int(priority)) if priority else None,
            requester=requester,
        )


class RenewOutcome(enum.Enum):
    """The kinds of renewal (and release/resize) replies."""

    OK = "ok"
    LOST = "lost"
    NOT_HELD = "notheld"
    TOO_BIG = "too_big"
    NO_FIT = "nofit"


@dataclass(frozen=True)
class RenewResult:
    """One renewal reply; ``reason`` says why a lost lease is gone."""

    outcome: RenewOutcome
    now_ms: int = 0
    expiry_ms: int = 0
    preempt: PreemptNotice | None = None
    epoch: int = 0
    reason: str = ""


def parse_renew(reply: list[Any]) -> RenewResult:
    """Parse the reply of the renew, release or resize script."""
    outcome = RenewOutcome(reply[0])
    if outcome is RenewOutcome.OK and len(reply) > 1:
        now = int(reply[1])
        preempt = PreemptNotice.parse(str(reply[3]), now) if reply[3] else None
        return RenewResult(outcome, now, int(reply[2]), preempt, int(reply[4]))
    if outcome is RenewOutcome.LOST:
        return RenewResult(outcome, reason=str(reply[1]))
    if outcome in (RenewOutcome.TOO_BIG, RenewOutcome.NO_FIT):
        return RenewResult(outcome, reason=" ".join(str(x) for x in reply[1:]))
    return RenewResult(outcome)
