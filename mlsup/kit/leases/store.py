"""``LeaseStore``: the lease layer's Redis I/O, and the one place redis errors are translated.

Everything here is one round trip: a script (EVALSHA, registered once per store), a BLPOP on a
waiter's wake list, or an INFO. Decisions live in the scripts (atomic) and in :mod:`policy`.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.connection import AbstractConnection

from mlsup import defaults
from mlsup.errors import LeaseError, TransportError
from mlsup.kit.leases.keys import LeaseKeys
from mlsup.kit.leases.owner import HolderIdentity
from mlsup.kit.leases.results import (
    AdmitResult,
    LeaseRequest,
    RenewResult,
    parse_admit,
    parse_renew,
)
from mlsup.kit.leases.scripts import Script, source
from mlsup.kit.leases.timing import LeaseTiming

__all__ = ["GpuListing", "LeaseStore", "RedisInfo", "uptime_lower_bound_ms"]

T = TypeVar("T")

#: A GPU's purged state: (Redis now ms, capacity or -1, lease field maps, waiters (id, MB, prio)).
GpuListing = tuple[int, int, list[dict[str, str]], list[tuple[str, int, int]]]
#: (run_id, uptime in seconds) of the Redis server.
RedisInfo = tuple[str, int]


class LeaseStore:
    """Redis I/O of the lease layer under one key prefix.

    Raises :class:`TransportError` when Redis cannot be reached or times out, and
    :class:`LeaseError` when Redis refuses a command (a bug, or keys of another type under
    our prefix); both chain the redis-py exception.
    """

    def __init__(self, url: str, prefix: str, timing: LeaseTiming) -> None:
        self.url = url
        self.keys = LeaseKeys(prefix)
        self.timing = timing
        # No socket timeout: BLPOP legitimately blocks; every wait has its own bound.
        self._client: aioredis.Redis = aioredis.Redis.from_url(url, decode_responses=True)
        # The scripts run one at a time on a connection of their own, held and written to
        # directly (no pool round and no command machinery per call; Redis runs scripts one
        # at a time anyway). BLPOP, pub/sub and the rest use the pool.
        self._scripts_conn: AbstractConnection | None = None
        self._scripts_lock = asyncio.Lock()
        self._sha = {s: hashlib.sha1(source(s).encode()).hexdigest() for s in Script}
        self._evalsha_head = {
            script: _bulk(b"EVALSHA", sha.encode(), b"0") for script, sha in self._sha.items()
        }
        self._lend: Callable[[], Awaitable[AbstractConnection]] = (
            self._client.connection_pool.get_connection
        )
        # The arguments that never change, encoded once (they are on every call's path).
        t = timing
        self._prefix_bulk = _bulk(self.keys.prefix)
        self._admit_tail = _encoded(
            t.ms(t.ttl_s), t.ms(t.grace_s), t.ms(t.waiter_ttl_s), t.ms(t.tombstone_s),
            defaults.PREEMPT_MAX_CANDIDATES,
        )  # fmt: skip
        self._renew_tail = _encoded(t.ms(t.ttl_s), t.ms(t.tombstone_s))

    @property
    def client(self) -> aioredis.Redis:
        """The connection pool (the push listener takes its own pub/sub connection from it)."""
        return self._client

    async def close(self) -> None:
        """Close the connections."""
        await self._client.aclose()  # the held connection too: it is the pool's

    async def _run(self, op: str, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except redis.exceptions.RedisError as exc:
            raise self._error(op, exc) from exc

    def _error(self, op: str, exc: redis.exceptions.RedisError) -> BaseException:
        """What to raise for a redis-py error during ``op``."""
        if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
            if _being_cancelled():
                # redis-py can turn a cancellation that lands mid-read into a connection
                # error; translating it would swallow the cancellation (close() would hang).
                return asyncio.CancelledError()
            return TransportError(
                f"Redis did not answer {op}: {exc}; check that it runs at {self.url} "
                "(MLSUP_REDIS_URL, or `mlsup start` for the embedded one)",
                url=self.url,
            )
        return LeaseError(
            f"Redis refused {op}: {exc}; "
            f"is the key prefix {self.keys.prefix!r} used by something else?",
            url=self.url,
        )

    async def _script(self, script: Script, *args: str | int | bytes) -> Any:
        # EVALSHA packed here and sent on the held connection (see __init__).
        command = [self._evalsha_head[script], self._prefix_bulk, _bulk(*args)]
        header = b"*%d\r\n" % (4 + len(args))
        async with self._scripts_lock:
            try:
                return await self._send(header, command)
            except redis.exceptions.NoScriptError:
                pass  # Redis forgot it (a restart): load it, then run it once more
            except redis.exceptions.RedisError as exc:
                raise self._error(script.value, exc) from exc
            await self._run("SCRIPT LOAD", lambda: self._client.script_load(source(script)))
            return await self._run(script.value, lambda: self._send(header, command))

    async def _send(self, header: bytes, command: list[bytes]) -> Any:
        """One command on the held connection, and its reply (a Redis error is raised)."""
        conn = self._scripts_conn
        if conn is None:
            conn = self._scripts_conn = await self._lend()
        elif conn.is_connected:
            # As the pool does before it lends a connection: one the server closed (a
            # restart) or left data on is reopened, not failed on. No command of ours is in
            # flight on it (the lock), so unread data means a broken exchange.
            try:
                stale = await conn.can_read()
            except (redis.exceptions.ConnectionError, OSError):
                stale = True
            if stale:
                await conn.disconnect()
        await conn.send_packed_command([header, *command], check_health=False)
        return await conn.read_response()

    async def ping(self) -> None:
        """Check that Redis answers."""
        await self._run("PING", self._client.ping)

    async def info(self) -> RedisInfo:
        """The server's run id (changes on every restart) and uptime."""
        server = await self._run("INFO", lambda: self._client.info("server"))
        return str(server["run_id"]), int(server["uptime_in_seconds"])

    async def admit(self, req: LeaseRequest, *, readmit: bool = False) -> AdmitResult:
        """Run admission for one request (or re-register a held lease with ``readmit``)."""
        reply = await self._script(
            Script.ADMISSION,
            req.gpu,
            req.id,
            req.token,
            req.vram_mb,
            int(req.priority),
            req.model_id,
            req.owner,
            req.pid,
            req.host,
            req.start,
            *self._admit_tail,
            "readmit" if readmit else "new",
            req.users,
        )
        return parse_admit(reply)

    async def renew(self, lease_id: str, token: str) -> RenewResult:
        """Extend a lease by one TTL."""
        reply = await self._script(Script.RENEW, lease_id, token, *self._renew_tail)
        return parse_renew(reply)

    async def release(self, lease_id: str, token: str) -> RenewResult:
        """Give a lease back."""
        return parse_renew(await self._script(Script.RELEASE, lease_id, token))

    async def resize(self, lease_id: str, token: str, vram_mb: int) -> RenewResult:
        """Change a lease's size (grow only if it fits now and nobody waits)."""
        reply = await self._script(
            Script.RESIZE, lease_id, token, vram_mb, self.timing.ms(self.timing.tombstone_s)
        )
        return parse_renew(reply)

    async def reap(self, holder: HolderIdentity) -> bool:
        """Delete a lease whose owner and users are dead, as ``holder`` recorded them; False
        if the lease changed owner or users since (or is gone)."""
        tomb = self.timing.ms(self.timing.tombstone_s)
        reply = await self._script(
            Script.REAP, holder.lease_id, holder.pid, holder.start, holder.users, tomb
        )
        return bool(reply)

    async def set_users(self, lease_id: str, token: str, users: str) -> RenewResult:
        """Record the processes that use a lease's VRAM (``owner.encode_users``)."""
        return parse_renew(await self._script(Script.USERS, lease_id, token, users))

    async def leave(self, gpu: int, lease_id: str) -> None:
        """Take a waiter out of its queue (it gave up)."""
        await self._script(Script.LEAVE, gpu, lease_id)

    async def wait_wake(self, lease_id: str, timeout_s: float) -> bool:
        """Block until this waiter is woken or ``timeout_s`` passes; True if woken."""
        key = self.keys.wake(lease_id)
        timeout = max(0.001, timeout_s)
        reply = await self._run("BLPOP", lambda: self._client.blpop([key], timeout=timeout))
        return reply is not None

    async def sweep(self, gpu: int) -> GpuListing:
        """Purge one GPU and list its live leases and waiters."""
        now, capacity, leases, waiters = await self._script(
            Script.SWEEP, gpu, self.timing.ms(self.timing.tombstone_s)
        )
        maps = [dict(zip(fields[::2], fields[1::2], strict=True)) for fields in leases]
        queue = [(str(w[0]), int(w[1]), int(w[2])) for w in waiters]
        return int(now), int(capacity), maps, queue

    async def publish_capacity(self, gpu: int, capacity_mb: int, uptime_s: int) -> int:
        """Publish a capacity unless one exists; returns the capacity now in force.

        ``uptime_s`` is INFO's ``uptime_in_seconds``. A fresh Redis gets a settle window that
        lasts until it has been up for :attr:`LeaseTiming.settle`, measured from a lower bound
        of its uptime (see :func:`uptime_lower_bound_ms`).
        """
        settle_ms = self.timing.ms(self.timing.settle)
        uptime_ms = uptime_lower_bound_ms(uptime_s)
        reply = await self._script(Script.PUBLISH, gpu, capacity_mb, uptime_ms, settle_ms)
        return int(reply[1])

    async def published_gpus(self) -> dict[int, int]:
        """GPU index -> capacity (MB) of every GPU published under our prefix."""
        members = await self._run("SMEMBERS", lambda: self._client.smembers(self.keys.gpus))
        indices = sorted(int(m) for m in members)
        if not indices:
            return {}
        keys = [self.keys.capacity(i) for i in indices]
        values = await self._run("MGET", lambda: self._client.mget(keys))
        return {i: int(v) for i, v in zip(indices, values, strict=True) if v is not None}


def uptime_lower_bound_ms(uptime_s: int) -> int:
    """How long (ms) a Redis that reports ``uptime_in_seconds = uptime_s`` has surely been up.

    Redis computes that field as the difference of two whole-second clocks (now and start, both
    truncated), so it can exceed the real uptime by up to one second: a server up for 50 ms
    reports 1 when a second boundary fell in between. Taken at face value, that second came off
    the settle window, and with a one-second TTL the window vanished: a newcomer was admitted
    before the holders had re-registered (an over-commit). One second less is never more than
    the real uptime; the price is a settle window up to one second longer.
    """
    return max(0, uptime_s - 1) * 1000


def _encoded(*values: int) -> tuple[bytes, ...]:
    return tuple(str(v).encode() for v in values)


def _bulk(*args: str | int | bytes) -> bytes:
    """``args`` as RESP bulk strings (the arguments of a command, after its ``*n`` header)."""
    out = []
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)  # Python >= 3.11
    return bool(cancelling and cancelling())
