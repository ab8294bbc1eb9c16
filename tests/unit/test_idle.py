"""The idle manager's pure decisions, and the manager driven by a fake clock."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from mlsup.errors import ModelNotFound
from mlsup.kit.idle import IdleResourceManager, idle_expired, next_deadline
from mlsup.kit.loaders.base import ModelLoader


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingLoader(ModelLoader):
    """A loader of plain Python objects: the idle manager's logic needs no runtime."""

    name = "counting"

    def __init__(self) -> None:
        super().__init__()
        self.loads = 0

    def _estimate_mb(self, path: Path, options: Mapping[str, Any]) -> float:
        return 1.0

    def _load(self, path: Path, options: Mapping[str, Any]) -> Any:
        self.loads += 1
        return {"path": str(path), "n": self.loads, **options}


def test_idle_expired_decision() -> None:
    assert idle_expired(last_used=0, in_use=0, timeout_s=10, now=10)
    assert not idle_expired(last_used=0, in_use=0, timeout_s=10, now=9.99)
    assert not idle_expired(last_used=0, in_use=1, timeout_s=10, now=100)
    assert not idle_expired(last_used=0, in_use=0, timeout_s=0, now=1e9)
    assert next_deadline(last_used=5, in_use=0, timeout_s=10) == 15
    assert next_deadline(last_used=5, in_use=2, timeout_s=10) is None
    assert next_deadline(last_used=5, in_use=0, timeout_s=0) is None


def test_unloads_after_timeout_and_reloads_on_demand(tmp_path: Path) -> None:
    clock = FakeClock()
    manager = IdleResourceManager(idle_timeout_s=60, clock=clock)
    loader = CountingLoader()
    manager.register("m", loader, tmp_path, k=1)
    assert not manager.is_loaded("m")
    assert manager.get("m") == {"path": str(tmp_path.resolve()), "n": 1, "k": 1}
    assert manager.next_sweep_at() == 1060
    clock.now += 59
    assert manager.sweep() == []
    manager.get("m")  # a use pushes the deadline back
    clock.now += 59
    assert manager.sweep() == []
    clock.now += 1
    assert manager.sweep() == ["m"]
    assert not manager.is_loaded("m") and loader.model is None
    assert manager.next_sweep_at() is None
    assert manager.get("m")["n"] == 2
    assert manager.load_count("m") == 2


def test_model_in_use_is_never_unloaded(tmp_path: Path) -> None:
    clock = FakeClock()
    manager = IdleResourceManager(idle_timeout_s=1, clock=clock)
    manager.register("m", CountingLoader(), tmp_path)
    with manager.use("m") as model:
        clock.now += 1000
        assert manager.sweep() == []
        assert model["n"] == 1
    assert manager.sweep() == []  # the use just ended: idle time starts now
    clock.now += 1
    assert manager.sweep() == ["m"]


def test_per_model_timeouts_and_never(tmp_path: Path) -> None:
    clock = FakeClock()
    manager = IdleResourceManager(idle_timeout_s=10, clock=clock)
    manager.register("fast", CountingLoader(), tmp_path, idle_timeout_s=5)
    manager.register("never", CountingLoader(), tmp_path, idle_timeout_s=0)
    manager.register("default", CountingLoader(), tmp_path)
    for name in ("fast", "never", "default"):
        manager.get(name)
    clock.now += 5
    assert manager.sweep() == ["fast"]
    clock.now += 5
    assert manager.sweep() == ["default"]
    clock.now += 1e6
    assert manager.sweep() == []
    manager.unload_all()
    assert not manager.is_loaded("never")


def test_unknown_model() -> None:
    with pytest.raises(ModelNotFound):
        IdleResourceManager().get("x")


def test_background_thread_unloads_in_real_time(tmp_path: Path) -> None:
    manager = IdleResourceManager(idle_timeout_s=0.05)
    manager.register("m", CountingLoader(), tmp_path)
    manager.start()
    try:
        manager.get("m")
        deadline = time.monotonic() + 5
        while manager.is_loaded("m") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not manager.is_loaded("m")
    finally:
        manager.stop()
    assert not any(t.name == "mlsup-idle" for t in threading.enumerate())
