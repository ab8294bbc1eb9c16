"""Redis key names of the lease layer, under an optional deployment prefix.

The architecture's keys (``redis-cli ZRANGE gpu:0:leases 0 -1 WITHSCORES`` shows the holders):

==============================  ===========  ====================================================
key                             type         meaning
==============================  ===========  ====================================================
``gpu:{i}:leases``              sorted set   lease id -> expiry (ms, Redis ``TIME``)
``lease:{id}``                  hash         vram_mb, priority, model_id, owner, pid, host,
                                             start (owner process start time), created, epoch,
                                             token, gpu, preempt_deadline (when asked to yield),
                                             users (processes on its VRAM: ``pid:start,...``)
``boss:heartbeat:{id}``         string, TTL  alive marker of the holder, refreshed on renewal
``boss:preempt:{id}``           string, TTL  ``deadline_ms|priority|requester``: asked to yield
``gpu:{i}:capacity``            string       budget in MB (NVML or configuration)
==============================  ===========  ====================================================

Pub/sub (see :mod:`push`):

==============================  ===========  ====================================================
``boss:push:{host:pid}``        channel      preemption requests pushed to the holder's process
                                             (``id|now_ms|deadline_ms|priority|requester``)
==============================  ===========  ====================================================

Added by this layer:

==============================  ===========  ====================================================
``gpus``                        set          indices of the GPUs whose capacity is published
``gpu:{i}:epoch``               string       fencing counter, incremented on every grant
``gpu:{i}:queue``               sorted set   waiter id -> order score (priority, then arrival)
``gpu:{i}:seq``                 string       arrival counter of the queue
``gpu:{i}:settle_until``        string       ms (Redis time) before which only re-registrations
                                             are admitted, after a Redis restart
``waiter:{id}``                 hash         vram_mb, priority, expires (ms) of a queued caller
``waiter:{id}:wake``            list         wake tokens; the waiter blocks on it (BLPOP)
``lease:{id}:gone``             string, TTL  ``token|reason`` of a lease that expired, was
                                             revoked or reaped: tells "lost" from "never held"
==============================  ===========  ====================================================

A waiter id is the id the lease gets once granted. The Lua scripts build the per-lease key names
from the prefix themselves (a lease's keys are only known once its id is read), which is fine
on a single Redis server; Redis Cluster is not supported.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LeaseKeys"]


@dataclass(frozen=True)
class LeaseKeys:
    """Key names under one prefix (``""`` for none)."""

    prefix: str = ""

    @property
    def gpus(self) -> str:
        return f"{self.prefix}gpus"

    def leases(self, gpu: int) -> str:
        return f"{self.prefix}gpu:{gpu}:leases"

    def capacity(self, gpu: int) -> str:
        return f"{self.prefix}gpu:{gpu}:capacity"

    def epoch(self, gpu: int) -> str:
        return f"{self.prefix}gpu:{gpu}:epoch"

    def queue(self, gpu: int) -> str:
        return f"{self.prefix}gpu:{gpu}:queue"

    def settle_until(self, gpu: int) -> str:
        return f"{self.prefix}gpu:{gpu}:settle_until"

    def lease(self, lease_id: str) -> str:
        return f"{self.prefix}lease:{lease_id}"

    def gone(self, lease_id: str) -> str:
        return f"{self.prefix}lease:{lease_id}:gone"

    def heartbeat(self, lease_id: str) -> str:
        return f"{self.prefix}boss:heartbeat:{lease_id}"

    def preempt(self, lease_id: str) -> str:
        return f"{self.prefix}boss:preempt:{lease_id}"

    def push(self, owner: str) -> str:
        """The pub/sub channel of one owner process (``host:pid``)."""
        return f"{self.prefix}boss:push:{owner}"

    def waiter(self, lease_id: str) -> str:
        return f"{self.prefix}waiter:{lease_id}"

    def wake(self, lease_id: str) -> str:
        return f"{self.prefix}waiter:{lease_id}:wake"
