"""Unload models that nobody used for a while; load them again on the next use.

The decision is pure (:func:`idle_expired`, :func:`next_deadline`) and takes the time as an
argument; :class:`IdleResourceManager` applies it with an injectable clock, so tests cost no
real time. A model in use (inside :meth:`IdleResourceManager.use`) is never unloaded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlsup.defaults import IDLE_TIMEOUT_S
from mlsup.errors import ModelNotFound

if TYPE_CHECKING:
    from mlsup.kit.loaders.base import ModelLoader
    from mlsup.kit.manifest import ModelSpec

__all__ = ["IdleResourceManager", "idle_expired", "next_deadline"]

Clock = Callable[[], float]


def idle_expired(*, last_used: float, in_use: int, timeout_s: float, now: float) -> bool:
    """Whether a loaded model should be unloaded now (timeout 0: never)."""
    return in_use == 0 and timeout_s > 0 and now - last_used >= timeout_s


def next_deadline(*, last_used: float, in_use: int, timeout_s: float) -> float | None:
    """When the model becomes idle-expired, if nothing uses it before; None: not scheduled."""
    if in_use or timeout_s <= 0:
        return None
    return last_used + timeout_s


@dataclass
class _Entry:
    loader: ModelLoader
    path: str | Path
    options: dict[str, Any]
    timeout_s: float
    last_used: float = 0.0
    in_use: int = 0
    loads: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock)


class IdleResourceManager:
    """Keeps models loaded while they are used, and unloads each after its idle timeout.

    ``register`` a loader and path under an id; :meth:`get` or :meth:`use` loads on demand;
    :meth:`sweep` unloads what has been idle for its timeout (call it yourself, or
    :meth:`start` a thread that does). ``clock`` is injectable (seconds, monotonic).
    """

    def __init__(
        self, *, idle_timeout_s: float = IDLE_TIMEOUT_S, clock: Clock = time.monotonic
    ) -> None:
        self.idle_timeout_s = idle_timeout_s
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def register(
        self,
        model_id: str,
        loader: ModelLoader,
        path: str | Path,
        *,
        idle_timeout_s: float | None = None,
        **options: Any,
    ) -> None:
        """Manage ``model_id``: ``loader.load(path, **options)`` when it is next used."""
        timeout = self.idle_timeout_s if idle_timeout_s is None else idle_timeout_s
        with self._lock:
            self._entries[model_id] = _Entry(loader, path, dict(options), timeout)
        self._wake.set()

    def register_spec(self, spec: ModelSpec, loader: ModelLoader | None = None) -> None:
        """Manage a manifest entry with its own idle timeout (and its registry's loader)."""
        if loader is None:
            from mlsup.kit.loaders.registry import get_loader

            loader = get_loader(spec.loader)()
        self.register(
            spec.id, loader, spec.path, idle_timeout_s=spec.idle_timeout_s, **spec.options
        )

    def get(self, model_id: str) -> Any:
        """The loaded model, loading it first if needed; counts as a use."""
        entry = self._entry(model_id)
        with entry.lock:
            return self._ensure_loaded(entry)

    @contextmanager
    def use(self, model_id: str) -> Iterator[Any]:
        """The loaded model, guarded against idle unloading until the block ends."""
        entry = self._entry(model_id)
        with entry.lock:
            model = self._ensure_loaded(entry)
            entry.in_use += 1
        try:
            yield model
        finally:
            with entry.lock:
                entry.in_use -= 1
                entry.last_used = self._clock()
            self._wake.set()

    def is_loaded(self, model_id: str) -> bool:
        """Whether ``model_id`` is loaded now."""
        return self._entry(model_id).loader.loaded

    def load_count(self, model_id: str) -> int:
        """How many times ``model_id`` has been loaded (reloads after idling included)."""
        return self._entry(model_id).loads

    def sweep(self) -> list[str]:
        """Unload every model idle past its timeout; returns their ids."""
        now = self._clock()
        unloaded = []
        for model_id, entry in self._snapshot():
            with entry.lock:
                if entry.loader.loaded and idle_expired(
                    last_used=entry.last_used,
                    in_use=entry.in_use,
                    timeout_s=entry.timeout_s,
                    now=now,
                ):
                    entry.loader.unload()
                    unloaded.append(model_id)
        return unloaded

    def next_sweep_at(self) -> float | None:
        """Clock time of the next unload due, None when nothing is scheduled."""
        deadlines = [
            d
            for _, e in self._snapshot()
            if e.loader.loaded
            and (d := next_deadline(last_used=e.last_used, in_use=e.in_use, timeout_s=e.timeout_s))
            is not None
        ]
        return min(deadlines, default=None)

    def unload_all(self) -> None:
        """Unload every managed model now (they reload on their next use)."""
        for _, entry in self._snapshot():
            with entry.lock:
                entry.loader.unload()

    def start(self) -> None:
        """Sweep in a daemon thread, waking at each next deadline (real-time clock only)."""
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="mlsup-idle", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the sweeping thread (models stay loaded; see :meth:`unload_all`)."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()  # before sweeping: a use during the sweep wakes us again
            self.sweep()
            due = self.next_sweep_at()
            timeout = None if due is None else max(0.0, due - self._clock())
            self._wake.wait(timeout)

    def _ensure_loaded(self, entry: _Entry) -> Any:
        if not entry.loader.loaded:
            entry.loader.load(entry.path, **entry.options)
            entry.loads += 1
            self._wake.set()  # a newly loaded model has a deadline for the sweeping thread
        entry.last_used = self._clock()
        return entry.loader.model

    def _entry(self, model_id: str) -> _Entry:
        with self._lock:
            entry = self._entries.get(model_id)
        if entry is None:
            raise ModelNotFound(f"model {model_id!r} is not registered", model=model_id)
        return entry

    def _snapshot(self) -> list[tuple[str, _Entry]]:
        with self._lock:
            return list(self._entries.items())
