"""How many jobs each queue holds, by state, and how long its oldest waiting job has waited.

One Lua script reads a queue's counts and its oldest waiting job's age on Redis' own clock, in
one round trip, from the plain keys BullMQ keeps (``<prefix>:<queue>:wait``, ``active``...).
The same call serves ``mlsup jobs`` and the Prometheus collector (at scrape).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["COUNTS_SCRIPT", "STATES", "QueueCounts", "queue_counts"]

#: The states reported, in display order.
STATES = ("waiting", "active", "completed", "failed", "delayed")

#: ARGV[1]: the queue's key base ``<prefix>:<queue>:``. Returns the counts of STATES, then the
#: oldest waiting job's age in ms (-1 when none waits). Waiting counts the plain, prioritized
#: and paused jobs alike: all wait for a worker.
COUNTS_SCRIPT = """
local base = ARGV[1]
local waiting = redis.call("LLEN", base .. "wait") + redis.call("ZCARD", base .. "prioritized")
  + redis.call("LLEN", base .. "paused")
local age = -1
local oldest = redis.call("LINDEX", base .. "wait", -1)
if oldest then
  local stamp = tonumber(redis.call("HGET", base .. oldest, "timestamp"))
  if stamp then
    local now = redis.call("TIME")
    age = math.max(0, tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - stamp)
  end
end
return {waiting, redis.call("LLEN", base .. "active"), redis.call("ZCARD", base .. "completed"),
  redis.call("ZCARD", base .. "failed"), redis.call("ZCARD", base .. "delayed"), age}
"""


@dataclass(frozen=True)
class QueueCounts:
    """One queue's jobs by state; ``oldest_waiting_s`` is None when no job waits."""

    queue: str
    waiting: int
    active: int
    completed: int
    failed: int
    delayed: int
    oldest_waiting_s: float | None

    @classmethod
    def from_reply(cls, queue: str, reply: Sequence[Any]) -> QueueCounts:
        """Build from :data:`COUNTS_SCRIPT`'s reply."""
        waiting, active, completed, failed, delayed, age_ms = (int(v) for v in reply)
        age = None if age_ms < 0 else age_ms / 1000
        return cls(queue, waiting, active, completed, failed, delayed, age)

    def by_state(self) -> dict[str, int]:
        """The counts of :data:`STATES`."""
        return {state: getattr(self, state) for state in STATES}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _base(prefix: str, queue: str) -> str:
    return f"{prefix}:{queue}:"


def queue_counts(client: Any, prefix: str, queues: Iterable[str]) -> list[QueueCounts]:
    """Counts of ``queues`` under BullMQ key prefix ``prefix``, one round trip per queue
    (``client``: a synchronous redis client)."""
    return [
        QueueCounts.from_reply(name, client.eval(COUNTS_SCRIPT, 0, _base(prefix, name)))
        for name in queues
    ]
