"""One supervisor per runtime directory, and cleaning up after one that crashed.

The supervisor holds an exclusive ``flock`` on ``supervisor.lock`` for its whole life, and
keeps ``supervisor.state.json`` listing its workers (pid + start time). A new supervisor that
gets the lock knows any state file is a dead one's: it kills the workers still alive (if their
start time matches, so that a reused pid is never hit), removes their sockets and sweeps
their shared memory. The state file also lists the dead one's leases with their tokens: the
new supervisor releases them as soon as it is connected, so that ``mlsup leases`` is true at
once (the lease layer would reap them only when someone looks or needs the space, and never
those recorded from another host, a container restarted under a new name). A lease is released
only once its model's old worker has ended: killed orphans are waited for
(``ORPHAN_EXIT_WAIT_S``), and one that still runs keeps its lease until that expires.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import IO, TYPE_CHECKING

from mlsup import defaults
from mlsup.errors import ConfigError, LeaseError, TransportError
from mlsup.ipc.shm import sweep_orphans
from mlsup.kit.leases import GPUBoss, GPULease, Priority
from mlsup.process_identity import same_process
from mlsup.supervisor.config import RuntimePaths
from mlsup.supervisor.process import kill_group

if TYPE_CHECKING:
    from mlsup.supervisor.models import ModelRecord

__all__ = [
    "LeaseRecord",
    "PreviousState",
    "RunLock",
    "WorkerRecord",
    "read_previous",
    "reap_previous",
    "release_previous",
    "save_records",
    "write_state",
]


@dataclass(frozen=True)
class WorkerRecord:
    """A worker that may outlive its supervisor."""

    model: str
    pid: int
    start_token: str


@dataclass(frozen=True)
class LeaseRecord:
    """A lease a supervisor holds; its token is what lets a successor release it."""

    model: str
    lease_id: str
    token: str
    gpu: int
    vram_mb: int

    @classmethod
    def of(cls, lease: GPULease) -> LeaseRecord:
        return cls(lease.model_id, lease.id, lease.token, lease.gpu, lease.vram_mb)


class RunLock:
    """The exclusive right to supervise one runtime directory."""

    def __init__(self, paths: RuntimePaths) -> None:
        self._paths = paths
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock or raise ConfigError naming the supervisor that holds it."""
        handle = self._take()
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle

    def check(self) -> None:
        """Raise the ConfigError :meth:`acquire` would raise if a supervisor holds the lock;
        take nothing (``mlsup start --detach`` asks before it starts one in the background)."""
        if self._paths.lock.exists():
            self._take().close()  # closing the file drops the lock

    def _take(self) -> IO[str]:
        handle = open(self._paths.lock, "a+", encoding="utf-8")  # noqa: SIM115 - held for life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise ConfigError(
                f"a supervisor (pid {holder}) is already running on {self._paths.root}; "
                "stop it with `mlsup stop`, or set MLSUP_RUNTIME_DIR to run another",
                pid=holder,
            ) from None
        return handle

    def release(self) -> None:
        if self._file is not None:
            with contextlib.suppress(FileNotFoundError):
                self._paths.lock.unlink()
            self._file.close()
            self._file = None


def write_state(
    paths: RuntimePaths, workers: list[WorkerRecord], leases: list[LeaseRecord]
) -> None:
    """Record the live workers and held leases, atomically (readable by its owner only: the
    lease tokens are secrets)."""
    temporary = paths.state.with_suffix(".tmp")
    data = {
        "supervisor": os.getpid(),
        "workers": [asdict(worker) for worker in workers],
        "leases": [asdict(lease) for lease in leases],
    }
    temporary.touch(mode=0o600)
    temporary.write_text(json.dumps(data), encoding="utf-8")
    os.replace(temporary, paths.state)


def save_records(paths: RuntimePaths, records: Iterable[ModelRecord]) -> None:
    """:func:`write_state` for the supervisor's models: their live workers and held leases."""
    records = list(records)
    workers = [
        WorkerRecord(r.id, r.worker.pid, r.worker.start_token)
        for r in records
        if r.worker is not None
    ]
    leases = [LeaseRecord.of(r.lease) for r in records if r.lease is not None and r.lease.held]
    write_state(paths, workers, leases)


@dataclass(frozen=True)
class PreviousState:
    """What a supervisor that died here recorded in its state file: its workers and leases,
    and why the file was ignored (None: it was read, or there was none)."""

    workers: list[WorkerRecord]
    leases: list[LeaseRecord]
    problem: str | None = None


def read_previous(paths: RuntimePaths) -> PreviousState:
    """The state file of a supervisor that died here, read once, before :func:`reap_previous`
    (which removes it) and :func:`release_previous`. Unreadable workers make the whole file
    ignored (``problem`` says why); unreadable leases only the leases (they expire anyway)."""
    try:
        data = json.loads(paths.state.read_text(encoding="utf-8"))
        workers = [WorkerRecord(**worker) for worker in data.get("workers", [])]
    except FileNotFoundError:
        return PreviousState([], [])
    except (ValueError, TypeError, AttributeError) as exc:
        return PreviousState([], [], f"ignored an unreadable state file: {exc}")
    try:
        leases = [LeaseRecord(**lease) for lease in data.get("leases", [])]
    except (TypeError, AttributeError):
        leases = []
    return PreviousState(workers, leases)


def still_in_use(
    leases: Iterable[LeaseRecord],
    workers: Iterable[WorkerRecord],
    alive: Callable[[int, str], bool],
) -> set[str]:
    """The ids of the leases whose model still has a worker that is ``alive(pid, start)``:
    its VRAM is in use, so the lease must not be released. Pure."""
    busy = {w.model for w in workers if w.start_token and alive(w.pid, w.start_token)}
    return {lease.lease_id for lease in leases if lease.model in busy}


async def release_previous(boss: GPUBoss, previous: PreviousState) -> list[str]:
    """Release the dead supervisor's leases with their tokens, except those whose old worker
    still runs (:func:`still_in_use`); returns what was done."""
    done = []
    busy = still_in_use(previous.leases, previous.workers, same_process)
    for record in previous.leases:
        if record.lease_id in busy:
            done.append(
                f"kept lease {record.lease_id} of {record.model}: the previous supervisor's "
                "worker still runs on it (it expires unless renewed)"
            )
            continue
        lease = GPULease(
            id=record.lease_id,
            token=record.token,
            gpu=record.gpu,
            vram_mb=record.vram_mb,
            priority=Priority.NORMAL,  # not read by a release
            model_id=record.model,
            epoch=0,
        )
        try:
            await boss.release(lease)
        except LeaseError:
            continue  # expired or reaped already: nothing left to give back
        except TransportError as exc:
            done.append(f"could not release lease {record.lease_id} of {record.model}: {exc}")
            continue
        done.append(
            f"released lease {record.lease_id} of {record.model} ({record.vram_mb} MB on GPU "
            f"{record.gpu}) left by the previous supervisor"
        )
    return done


def reap_previous(paths: RuntimePaths, previous: PreviousState) -> list[str]:
    """Clean up after a supervisor that died here (``previous``: its state file, from
    :func:`read_previous`); returns what was done, for the log."""
    done = [] if previous.problem is None else [previous.problem]
    killed = []
    for record in previous.workers:
        if record.start_token and same_process(record.pid, record.start_token):
            kill_group(record.pid, signal.SIGKILL)
            killed.append(record)
            done.append(f"killed orphan worker {record.model} (pid {record.pid})")
    # Their leases are released next: only once they have ended (their VRAM is theirs till then).
    deadline = time.monotonic() + defaults.ORPHAN_EXIT_WAIT_S
    while killed and time.monotonic() < deadline:
        killed = [r for r in killed if same_process(r.pid, r.start_token)]
        if killed:
            time.sleep(defaults.LIVENESS_SLICE_S)
    done += [f"orphan worker {r.model} (pid {r.pid}) still runs after SIGKILL" for r in killed]
    for socket in paths.root.glob("w-*.sock"):
        socket.unlink(missing_ok=True)
        done.append(f"removed stale socket {socket.name}")
    paths.control.unlink(missing_ok=True)
    swept = sweep_orphans()
    if swept:
        done.append(f"swept {len(swept)} orphan shared-memory segment(s)")
    paths.state.unlink(missing_ok=True)
    return done
