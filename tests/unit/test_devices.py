from __future__ import annotations

import os

import pytest

from mlsup.errors import ConfigError
from mlsup.kit.devices import Device, DeviceKind, discover_nvml, inventory, parse_devices
from mlsup.kit.leases.timing import LeaseTiming
from mlsup.kit.redis_url import resolve_redis_url


def test_simulated_and_cpu_devices_from_configuration() -> None:
    devices = parse_devices(
        [
            {"index": 1, "memory_mb": 8000, "kind": "cpu", "name": "ram"},
            {"index": 0, "memory_mb": 24000, "simulated": True},
        ]
    )
    assert [d.index for d in devices] == [0, 1]
    assert devices[0] == Device(0, 24000, DeviceKind.SIMULATED)
    assert devices[1].kind is DeviceKind.CPU and devices[1].name == "ram"
    assert parse_devices([{"index": 2, "memory_mb": 10, "simulated": False}])[0].kind is (
        DeviceKind.GPU
    )
    assert inventory([{"index": 0, "memory_mb": 5}]) == [Device(0, 5)]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"index": -1, "memory_mb": 10}, "'index' must be an integer >= 0"),
        ({"index": "0", "memory_mb": 10}, "'index' must be an integer"),
        ({"index": 0, "memory_mb": 0}, "'memory_mb' must be a positive integer"),
        ({"index": 0}, "'memory_mb' must be a positive integer"),
        ({"index": 0, "memory_mb": 10, "simulated": "yes"}, "'simulated' must be true or false"),
        ({"index": 0, "memory_mb": 10, "kind": "tpu"}, "'kind' must be one of"),
        ({"index": 0, "memory_mb": 10, "vram": 3}, "unknown field"),
        ({"index": 0, "memory_mb": 10, "name": 3}, "'name' must be a string"),
    ],
)
def test_bad_device_entries_are_config_errors(entry: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_devices([entry])


def test_duplicate_index_and_non_table_are_rejected() -> None:
    with pytest.raises(ConfigError, match="appears twice"):
        parse_devices([{"index": 0, "memory_mb": 1}, {"index": 0, "memory_mb": 2}])
    with pytest.raises(ConfigError, match="must be a table"):
        parse_devices([3])  # type: ignore[list-item]


def test_redis_url_resolution_order(
    monkeypatch: pytest.MonkeyPatch, runtime_dir: os.PathLike[str]
) -> None:
    monkeypatch.delenv("MLSUP_REDIS_URL", raising=False)
    with pytest.raises(ConfigError, match=r"set MLSUP_REDIS_URL .* `mlsup start`"):
        resolve_redis_url()
    (runtime_dir / "redis.url").write_text("unix:///x/redis.sock\n")  # type: ignore[operator]
    assert resolve_redis_url() == "unix:///x/redis.sock"
    monkeypatch.setenv("MLSUP_REDIS_URL", "redis://h:1/0")
    assert resolve_redis_url() == "redis://h:1/0"
    assert resolve_redis_url("redis://explicit") == "redis://explicit"


def test_lease_timing_is_validated() -> None:
    timing = LeaseTiming(ttl_s=3)
    assert timing.renew_interval == 1 and timing.settle == 3
    with pytest.raises(ConfigError, match="below ttl_s"):
        LeaseTiming(ttl_s=1, renew_interval_s=1)
    with pytest.raises(ConfigError, match="positive"):
        LeaseTiming(ttl_s=0)


def _has_nvidia_gpu() -> bool:
    devices = discover_nvml()
    return bool(devices)


@pytest.mark.gpu
@pytest.mark.skipif(not _has_nvidia_gpu(), reason="needs an NVIDIA GPU and driver")
def test_nvml_discovery_reports_capacity_below_total() -> None:
    devices = discover_nvml(reserve_mb=512)
    assert devices
    for device in devices:
        assert device.kind is DeviceKind.GPU
        assert device.total_mb is not None and device.free_mb is not None
        assert device.capacity_mb == device.total_mb - 512
        assert all(p.used_mb >= 0 for p in device.processes)


def test_without_nvml_there_is_no_gpu_unless_configured() -> None:
    if _has_nvidia_gpu():
        pytest.skip("this machine has a GPU")
    assert discover_nvml() is None or discover_nvml() == []
    assert inventory() == []
