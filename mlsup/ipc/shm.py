"""POSIX shared-memory segments: a pre-faulted pool on the creating side, a cache of mappings
on the attaching side, and a sweep of segments whose creator died.

Ownership is simple and strict: the process that creates a segment is the only one that
unlinks it (on :meth:`ShmPool.close`, or when trimming its free list); attaching never unlinks.
Python's ``multiprocessing.shared_memory`` is not used: before 3.13 its resource tracker
unlinks segments that a process merely attached, at that process's exit.

Names are ``mlsup-<pid>-<start>-<random>`` (see :data:`mlsup.ipc.wire.SEGMENT_NAME`), where
``start`` is the creator's start time, so that :func:`sweep_orphans` can tell a dead creator
from a live process that reused its pid.
"""

from __future__ import annotations

import _posixshmem  # type: ignore[import-not-found]  # CPython's own, no stubs
import contextlib
import mmap
import os
import secrets
import stat
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from mlsup import defaults
from mlsup.errors import ProtocolError
from mlsup.ipc.wire import SEGMENT_NAME
from mlsup.process_identity import ProcessIdentity, same_process

__all__ = ["AttachCache", "Segment", "ShmPool", "sweep_orphans"]

SHM_DIR = Path("/dev/shm")
_PAGE = mmap.PAGESIZE
_MAP_POPULATE = getattr(mmap, "MAP_POPULATE", 0)


def _size_class(nbytes: int) -> int:
    """Segment size for a block of nbytes: a power of two, at least SHM_MIN_SEGMENT_BYTES."""
    size = max(nbytes, defaults.SHM_MIN_SEGMENT_BYTES)
    return 1 << (size - 1).bit_length()


@dataclass(eq=False)
class Segment:
    """One mapped shared-memory segment created by this process (mode 0600)."""

    name: str
    size: int
    buffer: mmap.mmap = field(repr=False)

    @classmethod
    def create(cls, size: int, start_token: str) -> Segment:
        """Create, size, map and pre-fault a new segment with a fresh random name."""
        name = f"mlsup-{os.getpid()}-{start_token}-{secrets.token_hex(8)}"
        fd = _posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.fchmod(fd, 0o600)  # shm_open's mode is filtered by the umask; be exact
            os.ftruncate(fd, size)
            buffer = mmap.mmap(fd, size, flags=mmap.MAP_SHARED | _MAP_POPULATE)
        except BaseException:
            os.close(fd)
            _posixshmem.shm_unlink("/" + name)
            raise
        os.close(fd)
        if not _MAP_POPULATE:
            # Touch one byte a page so that the first real write does not fault page by page.
            view = memoryview(buffer)
            for offset in range(0, size, _PAGE):
                view[offset] = 0
            view.release()
        return cls(name, size, buffer)

    def unlink(self) -> None:
        """Remove the name; mappings (ours and attachers') stay valid until unmapped."""
        with contextlib.suppress(FileNotFoundError):
            _posixshmem.shm_unlink("/" + self.name)


class ShmPool:
    """The creator's pool of segments, lent out one block (= one segment) at a time.

    Segments are pooled by power-of-two size and reused, since creating and faulting a segment
    per request costs several times the copy itself. Thread-safe.

    A pool never closed still unlinks its segments when it is collected or when the process
    exits normally (a finalizer); a process killed outright leaves them to the supervisor's
    periodic :func:`sweep_orphans`.
    """

    def __init__(
        self,
        *,
        keep_bytes: int = defaults.SHM_POOL_KEEP_BYTES,
        max_bytes: int = defaults.SHM_POOL_MAX_BYTES,
    ) -> None:
        self._keep_bytes = keep_bytes
        self._max_bytes = max_bytes
        self._start_token = ProcessIdentity.current().token
        self._lock = threading.Lock()
        self._free: dict[int, list[Segment]] = {}
        self._free_bytes = 0
        self._lent: dict[str, Segment] = {}
        self._lent_bytes = 0
        self._closed = False
        # The finalizer holds the segment tables, never the pool: it runs once the pool is
        # garbage or at interpreter exit, and only in the process that made the segments (a
        # forked child that exits normally must not unlink its parent's).
        self._finalizer = weakref.finalize(self, _unlink_left, os.getpid(), self._lent, self._free)

    @property
    def lent_bytes(self) -> int:
        return self._lent_bytes

    def lent_names(self) -> set[str]:
        with self._lock:
            return set(self._lent)

    def lend(self, nbytes: int) -> Segment | None:
        """A segment of at least nbytes, now lent; None when the pool is at its limit."""
        size = _size_class(nbytes)
        with self._lock:
            if self._closed:
                return None
            free = self._free.get(size)
            if free:
                segment = free.pop()
                self._free_bytes -= size
                self._lent[segment.name] = segment
                self._lent_bytes += size
                return segment
            if self._lent_bytes + size > self._max_bytes:
                return None
            # Reserve the bytes, then create outside the lock (creation faults every page).
            self._lent_bytes += size
        try:
            segment = Segment.create(size, self._start_token)
        except BaseException:
            with self._lock:
                self._lent_bytes -= size
            raise
        with self._lock:
            self._lent[segment.name] = segment
            if self._closed:
                self._give_back_locked(segment.name)
        return segment

    def give_back(self, name: str) -> bool:
        """Return a lent segment to the pool; False if it was not lent (unknown or repeated)."""
        with self._lock:
            return self._give_back_locked(name)

    def _give_back_locked(self, name: str) -> bool:
        segment = self._lent.pop(name, None)
        if segment is None:
            return False
        self._lent_bytes -= segment.size
        if self._closed or self._free_bytes + segment.size > self._keep_bytes:
            segment.unlink()
        else:
            self._free.setdefault(segment.size, []).append(segment)
            self._free_bytes += segment.size
        return True

    def discard(self, name: str) -> None:
        """Forget and unlink a lent segment that must not be reused (a reader may hold it)."""
        with self._lock:
            segment = self._lent.pop(name, None)
            if segment is None:
                return
            self._lent_bytes -= segment.size
        segment.unlink()

    def close(self) -> None:
        """Unlink every segment, lent or free. Borrowers' mappings remain valid."""
        with self._lock:
            self._closed = True
            segments = [*self._lent.values()]
            for free in self._free.values():
                segments.extend(free)
            self._lent.clear()
            self._free.clear()
            self._lent_bytes = self._free_bytes = 0
        for segment in segments:
            segment.unlink()
        self._finalizer.detach()

    def __enter__(self) -> ShmPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _unlink_left(creator: int, lent: dict[str, Segment], free: dict[int, list[Segment]]) -> None:
    """The pool's finalizer: unlink what a pool never closed still holds."""
    if os.getpid() != creator:
        return
    for segment in [*lent.values(), *(s for group in free.values() for s in group)]:
        segment.unlink()


class AttachCache:
    """Mappings of other processes' segments, opened once and reused (LRU).

    Dropping a mapping from the cache never invalidates arrays that view it: the mmap object
    lives until its last view is gone.
    """

    def __init__(self, capacity: int = defaults.SHM_ATTACH_CACHE_SIZE) -> None:
        self._capacity = capacity
        self._lock = threading.Lock()
        self._maps: OrderedDict[str, mmap.mmap] = OrderedDict()

    def view(self, name: str, offset: int, nbytes: int) -> memoryview:
        """A writable view of nbytes at offset in segment name; ProtocolError if out of bounds."""
        buffer = self._mapping(name)
        if offset + nbytes > len(buffer):
            raise ProtocolError(
                f"block [{offset}, {offset + nbytes}) lies outside segment {name} "
                f"of {len(buffer)} bytes"
            )
        return memoryview(buffer)[offset : offset + nbytes]

    def _mapping(self, name: str) -> mmap.mmap:
        with self._lock:
            buffer = self._maps.get(name)
            if buffer is not None:
                self._maps.move_to_end(name)
                return buffer
        if not SEGMENT_NAME.fullmatch(name):
            raise ProtocolError(f"foreign shared-memory segment name {name!r}")
        buffer = _attach(name)
        with self._lock:
            self._maps[name] = buffer
            while len(self._maps) > self._capacity:
                self._maps.popitem(last=False)
        return buffer

    def forget(self, name: str) -> None:
        """Drop a mapping (its creator unlinked it); live views keep it mapped."""
        with self._lock:
            self._maps.pop(name, None)

    def clear(self) -> None:
        with self._lock:
            self._maps.clear()


def _attach(name: str) -> mmap.mmap:
    try:
        fd = _posixshmem.shm_open("/" + name, os.O_RDWR, 0)
    except FileNotFoundError:
        raise ProtocolError(f"shared-memory segment {name} does not exist") from None
    except PermissionError:
        raise ProtocolError(f"shared-memory segment {name} is not ours") from None
    try:
        info = os.fstat(fd)
        if info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
            raise ProtocolError(f"shared-memory segment {name} is not private to this user")
        if info.st_size == 0:
            raise ProtocolError(f"shared-memory segment {name} is empty")
        return mmap.mmap(fd, info.st_size, flags=mmap.MAP_SHARED | _MAP_POPULATE)
    finally:
        os.close(fd)


def sweep_orphans(directory: Path = SHM_DIR) -> list[str]:
    """Unlink this user's mlsup segments whose creator is dead; returns their names."""
    removed = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    uid = os.getuid()
    for entry in entries:
        match = SEGMENT_NAME.fullmatch(entry.name)
        if match is None:
            continue
        try:
            if entry.stat(follow_symlinks=False).st_uid != uid:
                continue
        except FileNotFoundError:
            continue
        if same_process(int(match.group(1)), match.group(2)):
            continue
        with contextlib.suppress(FileNotFoundError):
            _posixshmem.shm_unlink("/" + entry.name)
            removed.append(entry.name)
    return removed
