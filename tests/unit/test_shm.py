"""The shared-memory pool and attach cache, in one process."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from mlsup.errors import ProtocolError
from mlsup.ipc.shm import AttachCache, ShmPool, sweep_orphans

MiB = 1 << 20


def shm_exists(name: str) -> bool:
    return os.path.exists(f"/dev/shm/{name}")


def test_blocks_are_reused_by_size_class_and_private() -> None:
    with ShmPool() as pool:
        first = pool.lend(3 * MiB)
        assert first is not None and first.size == 4 * MiB
        assert stat.S_IMODE(os.stat(f"/dev/shm/{first.name}").st_mode) == 0o600
        assert first.name.startswith(f"mlsup-{os.getpid()}-")
        assert pool.give_back(first.name)
        assert not pool.give_back(first.name), "a block cannot be given back twice"
        again = pool.lend(4 * MiB)
        assert again is first
        other = pool.lend(100)
        assert other is not None and other.size == MiB and other is not first
        assert pool.lent_names() == {first.name, other.name}


def test_close_unlinks_lent_and_free_segments() -> None:
    pool = ShmPool()
    lent, free = pool.lend(MiB), pool.lend(MiB)
    assert lent is not None and free is not None
    pool.give_back(free.name)
    pool.close()
    assert not shm_exists(lent.name) and not shm_exists(free.name)
    assert pool.lend(MiB) is None


def test_limits_fall_back_instead_of_failing() -> None:
    with ShmPool(max_bytes=2 * MiB, keep_bytes=MiB) as pool:
        a, b = pool.lend(MiB), pool.lend(MiB)
        assert a is not None and b is not None
        assert pool.lend(1) is None, "over max_bytes: the caller sends a frame instead"
        pool.give_back(a.name)
        pool.give_back(b.name)  # beyond keep_bytes: unlinked, not kept
        assert shm_exists(a.name) and not shm_exists(b.name)


def test_discarded_blocks_are_never_lent_again() -> None:
    with ShmPool() as pool:
        block = pool.lend(MiB)
        assert block is not None
        pool.discard(block.name)
        assert not shm_exists(block.name)
        assert pool.lend(MiB) is not block


def test_attach_sees_the_creators_bytes_without_copying() -> None:
    with ShmPool() as pool:
        block = pool.lend(MiB)
        assert block is not None
        cache = AttachCache()
        view = np.frombuffer(cache.view(block.name, 4096, 8), dtype=np.uint8)
        block.buffer[4096:4104] = b"abcdefgh"
        assert view.tobytes() == b"abcdefgh"
        with pytest.raises(ProtocolError, match="outside segment"):
            cache.view(block.name, MiB - 4, 8)


@pytest.mark.parametrize("name", ["PostgreSQL.1", "../etc/passwd", "mlsup-1-a-../../x", ""])
def test_attach_refuses_foreign_names(name: str) -> None:
    with pytest.raises(ProtocolError, match="foreign"):
        AttachCache().view(name, 0, 1)


def test_attach_refuses_missing_segments() -> None:
    with pytest.raises(ProtocolError, match="does not exist"):
        AttachCache().view("mlsup-1-1-0123456789abcdef", 0, 1)


def test_sweep_keeps_live_owners_segments() -> None:
    with ShmPool() as pool:
        block = pool.lend(MiB)
        assert block is not None
        assert block.name not in sweep_orphans()
        assert shm_exists(block.name)


def test_a_pool_never_closed_unlinks_its_segments_when_collected() -> None:
    pool = ShmPool()
    lent, free = pool.lend(MiB), pool.lend(MiB)
    assert lent is not None and free is not None
    pool.give_back(free.name)
    names = [lent.name, free.name]
    del pool, lent, free  # no close(): the finalizer does it
    assert not any(shm_exists(name) for name in names)


def test_a_forked_child_leaves_its_parents_segments_alone() -> None:
    with ShmPool() as pool:
        segment = pool.lend(MiB)
        assert segment is not None
        child = os.fork()
        if child == 0:  # the child runs the finalizers as a normal exit would
            import weakref

            for finalizer in list(weakref.finalize._registry):  # type: ignore[attr-defined]
                finalizer()
            os._exit(0)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert shm_exists(segment.name)
