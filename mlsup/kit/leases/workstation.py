"""What a bare ``GPUBoss()`` uses on a workstation: the supervisor's own configuration.

A feature runner that says only ``GPUBoss()`` must coordinate with the same Redis, under the
same key prefix and with the same devices as the supervisor on that machine. Those come from
the ``mlsup.toml`` the supervisor reads (``$MLSUP_CONFIG``) when it is set; the Redis URL then
falls back to ``$MLSUP_REDIS_URL`` and the URL a running supervisor published
(:func:`~mlsup.kit.redis_url.resolve_redis_url`), and devices to NVML, the capacities already
published, and the CPU-only rule (:func:`~mlsup.kit.devices.cpu_budget_devices`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mlsup.kit.devices import Device
from mlsup.kit.manifest import CONFIG_ENV, Manifest, load_manifest

__all__ = ["BossDefaults", "boss_defaults"]


@dataclass(frozen=True)
class BossDefaults:
    """A boss's Redis URL (None: resolved at connect), key prefix and configured devices
    (None: NVML, else published, else the CPU rule)."""

    redis_url: str | None
    prefix: str
    devices: list[Mapping[str, Any] | Device] | None


def boss_defaults(
    redis_url: str | None,
    prefix: str | None,
    devices: Iterable[Mapping[str, Any] | Device] | None,
    manifest: Manifest | None = None,
) -> BossDefaults:
    """Fill what the caller left out from ``manifest`` (default: ``$MLSUP_CONFIG`` if set).

    Explicit arguments always win; a manifest is read only when something is missing.
    """
    missing = redis_url is None or prefix is None or devices is None
    if manifest is None and missing and os.environ.get(CONFIG_ENV):
        manifest = load_manifest()
    if manifest is not None:
        redis_url = redis_url or manifest.redis.url
        prefix = manifest.redis.prefix if prefix is None else prefix
        if devices is None and manifest.devices:
            devices = list(manifest.devices)
    return BossDefaults(
        redis_url=redis_url,
        prefix=prefix or "",
        devices=None if devices is None else list(devices),
    )
