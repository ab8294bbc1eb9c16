"""Job queues: BullMQ queues served by supervised models.

``[queues.<name>]`` in ``mlsup.toml`` names the model and operation that serve a queue; the
supervisor runs :mod:`mlsup.queues` (``python -m mlsup.queues``) as a sidecar that serves every
such queue with the official ``bullmq`` worker, calling models through the async proxy. Jobs
may come from BullMQ for Node or from :mod:`mlsup.jobs`; :mod:`mlsup.kit.queue` gives the
same processing to a feature's own runner.
"""

from __future__ import annotations

from mlsup.queues.config import QueueSpec, parse_queues

__all__ = ["QueueSpec", "parse_queues"]
