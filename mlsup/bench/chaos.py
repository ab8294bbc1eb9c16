"""``mlsup bench chaos``: what bad luck does to a running supervisor and its callers.

Scenarios, on a supervisor of its own with a private Redis (never the shared one), the probe
model (:mod:`mlsup.testing.loaders`) and callers with a deadline:

* oversized frames: a 64 MiB header and a 64 MiB array sent to ``embed`` (wrong answers, the
  worker's peak memory growth);
* clients that exit without ``close()``, normally and by SIGKILL (segments left behind);
* a worker SIGSTOPped under load (hung calls, overruns, whether it is replaced);
* a worker SIGKILL storm under load (hung calls, overruns, recovery);
* a Redis restart under load with a second model waiting for the space (over-committed MB);
* the supervisor SIGKILLed under load, then restarted (overruns, seconds its worker served with
  its lease free for others, recovery).

Count rows must be zero (target ``== 0``); the others are times. Behaviours fixed elsewhere
(hung-worker watchdog, worker exit on supervisor death) show what this build does.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq

from mlsup.bench.chaos_tools import (
    CallLoad,
    LeaseWatch,
    PrivateRedis,
    dead_owner_segments,
    descendants,
    still_running,
    zombies,
)
from mlsup.bench.rows import Row
from mlsup.bench.supervised import probe_model
from mlsup.defaults import SHM_SWEEP_INTERVAL_S
from mlsup.errors import BenchmarkError, InvalidArgument, MlsupError, ProtocolError, error_from_wire
from mlsup.ipc.wire import Kind, decode
from mlsup.kit.leases import SyncGPUBoss
from mlsup.testing.supervisor import TEST_SETTINGS, RunningSupervisor, manifest

__all__ = ["run"]

SUITE = "chaos"
DEADLINE_S = 2.0  #: the callers' deadline
_DEVICE = {"index": 0, "memory_mb": 1000}
_MODELS = probe_model("m", vram_mb=600) + probe_model("rival", vram_mb=600)


def _count(name: str, value: float, note: str | None = None) -> Row:
    return Row(SUITE, name, "count", float(value), target="== 0", met=value == 0, note=note)


def _ms(name: str, seconds: float | None, note: str | None = None) -> Row:
    value = None if seconds is None else seconds * 1e3
    return Row(SUITE, name, "ms", value, note=note if value is not None else f"not run: {note}")


def _until(predicate: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)
    return value


def _load_rows(label: str, load: CallLoad) -> list[Row]:
    note = f"{len(load.calls)} calls, worst {load.worst_overrun_ms:+.0f} ms vs the deadline"
    return [
        _count(f"{label}: hung calls", load.hung),
        _count(f"{label}: deadline overruns (> {DEADLINE_S:g} s + 100 ms)", load.overruns, note),
    ]


class _Chaos:
    def __init__(self, sup: RunningSupervisor, redis: PrivateRedis, prefix: str) -> None:
        self.sup, self.redis, self.prefix = sup, redis, prefix
        self.proxy = sup.client(timeout=DEADLINE_S)
        self.model = self.proxy.model("m", timeout=DEADLINE_S)
        self.seen: set[int] = set()  #: every process the supervisor ran

    def boss(self) -> SyncGPUBoss:
        """A lease observer with the supervisor's own devices: after a Redis restart, whoever
        connects first publishes the capacity, and it must be the same one."""
        return SyncGPUBoss(self.redis.url, self.prefix, devices=[_DEVICE])

    def row(self, model: str = "m") -> dict[str, Any]:
        with self.sup.client(timeout=DEADLINE_S) as proxy:
            return next(r for r in proxy.status() if r["model"] == model)

    def ready_pid(self, timeout: float = 30) -> int:
        """The pid of m's worker once it serves (the calls before may meet a respawn)."""
        if not _until(lambda: _served(self.model), timeout):
            raise BenchmarkError(f"model m did not serve again within {timeout:g} s")
        pid = int(self.row()["pid"])
        self.seen |= {pid} | descendants(self.sup.pid)
        return pid

    def under_load(self, threads: int) -> CallLoad:
        return CallLoad(self.model, DEADLINE_S, threads).start()

    # -- the scenarios ---------------------------------------------------------------------------

    def oversized(self) -> list[Row]:
        pid = self.ready_pid()
        endpoint = self.row()["endpoint"]
        before, wrong = _peak_rss_mb(pid), 0
        huge = 64 << 20
        head = msgpack.packb([1, int(Kind.REQUEST), 77, "run", None, None, None])
        header = b"\x98" + head[1:] + b"\xdd" + huge.to_bytes(4, "big") + bytes(huge)
        for frames in ([header], [b"\xc1" * 1000], [head]):
            reply = _raw_call(endpoint, frames)
            wrong += not (
                reply is not None
                and reply.kind is Kind.ERROR
                and isinstance(error_from_wire(reply.error), ProtocolError)
            )
        try:
            self.proxy.model("m", timeout=30).call("embed", np.zeros(huge // 4, dtype=np.float32))
            wrong += 1
        except InvalidArgument:
            pass
        except MlsupError:
            wrong += 1
        growth = _peak_rss_mb(pid) - before
        replaced = int(self.row()["pid"] != pid)
        return [
            _count("oversized frames: wrong or missing error replies", wrong),
            _count("oversized frames: worker crashed", replaced),
            Row(SUITE, "oversized frames: worker peak RSS growth", "MB", growth,
                note="ZeroMQ holds the 64 MiB message itself; the array is in shared memory"),
        ]  # fmt: skip

    def clients(self) -> list[Row]:
        runtime = str(self.sup.runtime)
        quiet, quiet_names = _sender(runtime, wait=False)
        quiet.wait(30)
        left_exit = quiet_names & _segments_of(quiet.pid)
        killed, killed_names = _sender(runtime, wait=True)
        killed.kill()
        killed.wait()
        started = time.monotonic()
        swept = _until(
            lambda: not (killed_names & _segments_of(killed.pid)), 5 * SHM_SWEEP_INTERVAL_S
        )
        left_kill = killed_names & _segments_of(killed.pid)
        return [
            _count("client exits without close: segments left", len(left_exit)),
            _count(f"client SIGKILLed: segments left after {5 * SHM_SWEEP_INTERVAL_S:g} s",
                   len(left_kill)),
            _ms("client SIGKILLed: segments swept after",
                time.monotonic() - started if swept else None, "never swept"),
        ]  # fmt: skip

    def sigstop(self, wait_s: float) -> list[Row]:
        pid = self.ready_pid()
        load = self.under_load(2)
        stopped = time.monotonic()
        os.kill(pid, signal.SIGSTOP)
        try:
            replaced = _until(lambda: self.row()["pid"] not in (None, pid), wait_s)
            recovered = _until(lambda: load.served_after(time.monotonic() - 0.5) is not None, 10)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
            load.stop()
        if not replaced:  # this build has no watchdog: end the hung worker by hand
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return [
            *_load_rows("worker SIGSTOP", load),
            _count(f"worker SIGSTOP: not replaced within {wait_s:g} s", int(not replaced)),
            _ms("worker SIGSTOP -> serving again",
                time.monotonic() - stopped if replaced and recovered else None,
                "the hung worker was never replaced"),
        ]  # fmt: skip

    def storm(self, kills: int) -> list[Row]:
        load = self.under_load(3)
        recoveries = []
        try:
            for _ in range(kills):
                pid = self.ready_pid()
                killed = time.monotonic()
                os.kill(pid, signal.SIGKILL)
                back = _until(functools.partial(load.served_after, killed), 30)
                if back is not None:
                    recoveries.append(back)
        finally:
            load.stop()
        return [
            *_load_rows(f"worker SIGKILL storm ({kills} kills)", load),
            _count("worker SIGKILL storm: kills never recovered from", kills - len(recoveries)),
            _ms("worker SIGKILL -> serving again (median)",
                statistics.median(recoveries) if recoveries else None, "never recovered"),
        ]  # fmt: skip

    def redis_restart(self) -> list[Row]:
        self.ready_pid()
        load = self.under_load(2)
        over = 0
        boss = self.boss()
        try:
            restarted = time.monotonic()
            self.redis.restart()
            # The rival wants the space the holder re-registers: never both at once.
            with contextlib.suppress(MlsupError):
                self.proxy.load("rival", wait=False)
            end = time.monotonic() + 4 * DEADLINE_S
            while time.monotonic() < end:
                with contextlib.suppress(MlsupError, OSError):
                    for usage in boss.snapshot().values():
                        over = max(over, usage.used_mb - usage.capacity_mb)
                time.sleep(0.05)
            recovered = load.served_after(restarted)
        finally:
            load.stop()
            boss.close()
            with contextlib.suppress(MlsupError):
                self.proxy.unload("rival")
        return [
            *_load_rows("Redis restart", load),
            _count("Redis restart: over-committed MB (max)", max(over, 0)),
            _ms("Redis restart -> serving again", recovered, "never served again"),
        ]

    def supervisor_kill(self) -> list[Row]:
        pid = self.ready_pid()
        family = descendants(self.sup.pid)
        boss = self.boss()
        load = self.under_load(2)
        try:
            time.sleep(0.2)
            # Connected and looking before the kill: its first look after comes within ms,
            # while the worker may still run (a reap at once would show here).
            if not _leases_of(boss, "m"):
                raise BenchmarkError("model m holds no lease before the supervisor's SIGKILL")
            killed = time.monotonic()
            self.sup.kill()
            watch = LeaseWatch().observe(
                lambda: not _leases_of(boss, "m"), lambda: bool(still_running({pid})), 30
            )
            self.sup.start()
            restarted = time.monotonic()
            # Through the same proxy: it reconnects to the new supervisor.
            served = time.monotonic() - killed if _until(lambda: _served(self.model), 30) else None
        finally:
            load.stop()
            boss.close()
        leaked = still_running(family)
        unleased = watch.unleased_s
        gone_after = (watch.worker_gone_at or killed) - killed
        return [
            *_load_rows("supervisor SIGKILL", load),
            _count("supervisor SIGKILL: processes left after the restart", len(leaked)),
            Row(SUITE, "supervisor SIGKILL: seconds its worker ran with the lease free", "s",
                unleased, target="== 0", met=unleased == 0,
                note=f"worker exited {gone_after:.2f} s after the kill"),
            _ms("supervisor SIGKILL -> restarted and serving", served,
                f"restart took {(restarted - killed):.2f} s"),
        ]  # fmt: skip


def _served(model: Any) -> bool:
    try:
        model.run({})
    except MlsupError:
        return False
    return True


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise BenchmarkError(f"no peak RSS for pid {pid}")


def _raw_call(endpoint: str, frames: list[bytes]) -> Any:
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.RCVTIMEO, 30_000)
    sock.connect(endpoint)
    try:
        sock.send_multipart(frames)
        return decode(sock.recv_multipart())
    except (zmq.Again, MlsupError):
        return None
    finally:
        sock.close(linger=0)


def _leases_of(boss: SyncGPUBoss, model: str) -> bool:
    with contextlib.suppress(MlsupError, OSError):
        return any(
            lease.model_id == model for usage in boss.snapshot().values() for lease in usage.leases
        )
    return True  # unknown: not free yet


_SENDER = """
import os, sys
import numpy as np
import mlsup
sup = mlsup.connect(sys.argv[1], timeout=30)
sup.model("m").run({"x": np.ones(4 << 20, dtype=np.uint8)})
print(" ".join(n for n in os.listdir("/dev/shm") if n.startswith(f"mlsup-{os.getpid()}-")),
      flush=True)
if sys.argv[2] == "wait":
    sys.stdin.read()
"""


def _sender(runtime: str, wait: bool) -> tuple[subprocess.Popen[str], set[str]]:
    child = subprocess.Popen(
        [sys.executable, "-c", _SENDER, runtime, "wait" if wait else "exit"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout is not None
    names = set(child.stdout.readline().split())
    if not names:
        child.kill()
        child.wait()
        raise BenchmarkError("the client made no shared-memory segment")
    return child, names


def _segments_of(pid: int) -> set[str]:
    return {name for name in os.listdir("/dev/shm") if name.startswith(f"mlsup-{pid}-")}


#: When the supervisor's watchdog judges a silent, idle worker hung under the bench's settings
#: (heartbeat_s x heartbeat_misses): the SIGSTOP scenario waits that long plus a margin.
_HUNG_AFTER_S = TEST_SETTINGS["heartbeat_s"] * TEST_SETTINGS["heartbeat_misses"]


def run(quick: bool = False) -> list[Row]:
    """Every scenario once; ``quick`` kills fewer times and waits less for a hung worker."""
    prefix = f"mlsup-chaos:{uuid.uuid4().hex[:12]}:"
    redis = PrivateRedis().start()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="mlsup-chaos-") as tmp:
        config = manifest(
            redis.url, prefix, _MODELS, memory_mb=_DEVICE["memory_mb"],
            acquire_timeout=2 * DEADLINE_S, restart_window_s=0.01, restart_max_crashes=1000,
        )  # fmt: skip
        sup = RunningSupervisor(Path(tmp), config, name="chaos")
        chaos = None
        try:
            chaos = _Chaos(sup.start(), redis, prefix)
            rows += chaos.oversized()
            rows += chaos.clients()
            rows += chaos.sigstop(wait_s=_HUNG_AFTER_S + (5 if quick else 10))
            rows += chaos.storm(kills=3 if quick else 10)
            rows += chaos.redis_restart()
            rows += chaos.supervisor_kill()
        except BaseException:
            print(sup.output()[-6000:], file=sys.stderr)
            raise
        finally:
            if chaos is not None:
                chaos.proxy.close()
            sup.stop()
            redis.close()
            seen = chaos.seen if chaos is not None else set()
            leftover = still_running(seen)
            leaked = dead_owner_segments(seen | {sup.pid})
    rows += [
        _count("at the end: processes left running", len(leftover)),
        _count("at the end: zombies", zombies()),
        _count("at the end: segments of dead processes left", len(leaked)),
    ]
    return rows
