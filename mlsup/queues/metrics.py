"""``mlsup_queue_jobs{queue,state}`` for Prometheus: a collector reading the queues at scrape.

The gateway's ``/metrics`` registers it with one call::

    from mlsup.queues.metrics import register_queue_metrics
    register_queue_metrics(registry, config_path)      # no-op without [queues.<name>] tables
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mlsup.queues.config import load_queues, queue_prefix
from mlsup.queues.stats import STATES, queue_counts

__all__ = ["QueueJobsCollector", "register_queue_metrics"]

log = logging.getLogger("mlsup.queues")


class QueueJobsCollector:
    """A prometheus-client collector of ``mlsup_queue_jobs`` (a gauge per queue and state) and
    ``mlsup_queue_oldest_waiting_seconds``."""

    def __init__(self, redis_url: str, prefix: str, queues: Sequence[str]) -> None:
        import redis

        self._client = redis.Redis.from_url(redis_url)
        self.prefix = prefix
        self.queues = list(queues)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        jobs = GaugeMetricFamily(
            "mlsup_queue_jobs", "Jobs of each queue by state", labels=["queue", "state"]
        )
        oldest = GaugeMetricFamily(
            "mlsup_queue_oldest_waiting_seconds",
            "Age of each queue's oldest waiting job (0 when none waits)",
            labels=["queue"],
        )
        try:
            rows = queue_counts(self._client, self.prefix, self.queues)
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail because Redis blinked
            log.warning("queue metrics unavailable: %s", exc)
            return
        for row in rows:
            for state in STATES:
                jobs.add_metric([row.queue, state], getattr(row, state))
            oldest.add_metric([row.queue], row.oldest_waiting_s or 0.0)
        yield jobs
        yield oldest

    def close(self) -> None:
        self._client.close()


def register_queue_metrics(registry: Any, config: str | Path) -> QueueJobsCollector | None:
    """Register the queues of ``config`` (mlsup.toml) on ``registry``; None when it has none."""
    from mlsup.kit.redis_url import resolve_redis_url

    manifest, queues = load_queues(config)
    if not queues:
        return None
    collector = QueueJobsCollector(
        resolve_redis_url(manifest.redis.url), queue_prefix(manifest.redis.prefix), list(queues)
    )
    registry.register(collector)
    return collector
