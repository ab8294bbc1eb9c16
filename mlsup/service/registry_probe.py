"""Observe the host for ``mlsup services``: health endpoints, listening sockets, entrypoints.

The I/O half of :mod:`mlsup.service.registry_checks`: it gathers an :class:`Observation` and
decides nothing. Health probes run concurrently, each bounded by its timeout, so a listing
takes one timeout at most however many services are down.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Collection, Iterable

import psutil

from mlsup.defaults import SERVICE_HEALTH_TIMEOUT_S, SERVICE_HOST
from mlsup.errors import ConfigError
from mlsup.service.registry import Registry
from mlsup.service.registry_checks import HealthReport, Listener, Observation, classify_health

__all__ = ["observe", "probe_entrypoints", "probe_health", "probe_listeners"]


def observe(
    registry: Registry, *, timeout: float = SERVICE_HEALTH_TIMEOUT_S, listeners: bool = True
) -> Observation:
    """Probe every declared port's health (and owner, with ``listeners``) and entrypoint."""
    ports = sorted({s.port for _, s in registry.services() if s.port is not None})
    entrypoints = [s.entrypoint for _, s in registry.services() if s.entrypoint is not None]
    return Observation(
        health=probe_health(ports, timeout=timeout),
        listeners=probe_listeners(ports) if listeners else {},
        entrypoints=probe_entrypoints(entrypoints),
    )


def probe_health(
    ports: Collection[int], *, timeout: float = SERVICE_HEALTH_TIMEOUT_S
) -> dict[int, HealthReport]:
    """``GET http://127.0.0.1:<port>/health`` for every port at once, each within ``timeout``."""
    if not ports:
        return {}
    try:
        import httpx
    except ImportError as exc:
        raise ConfigError(
            "health probes need httpx: pip install 'mlsup[service]'", missing="httpx"
        ) from exc

    async def probe_all() -> dict[int, HealthReport]:
        # trust_env=False: an HTTP(S)_PROXY in the environment must not route loopback calls.
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:

            async def probe(port: int) -> HealthReport:
                url = f"http://{SERVICE_HOST}:{port}/health"
                try:
                    response = await client.get(url)
                except httpx.ConnectError:
                    return classify_health(None, error="connection refused")
                except httpx.TimeoutException:
                    return classify_health(None, error=f"no answer within {timeout:g} s")
                except httpx.HTTPError as exc:
                    return classify_health(None, error=f"{type(exc).__name__}: {exc}")
                return classify_health(response.status_code, response.content)

            reports = await asyncio.gather(*(probe(p) for p in ports))
        return dict(zip(ports, reports, strict=True))

    return asyncio.run(probe_all())


def probe_listeners(ports: Iterable[int]) -> dict[int, tuple[Listener, ...]]:
    """The listening TCP sockets on ``ports``, with their process's pid, cwd and command line.

    Sockets of processes this user cannot inspect still appear, without pid (Linux lists every
    socket, but maps only our own to processes); where even the socket table is closed (macOS
    without privileges) the result is empty and the checks fall back on health answers.
    """
    wanted = set(ports)
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:
        return {}
    found: dict[int, dict[int | None, Listener]] = {}
    for conn in connections:
        if conn.status != psutil.CONN_LISTEN or not conn.laddr or conn.laddr.port not in wanted:
            continue
        port = conn.laddr.port
        # IPv4 and IPv6 sockets of one process are one listener.
        found.setdefault(port, {})[conn.pid] = _listener(port, conn.pid)
    return {port: tuple(by_pid.values()) for port, by_pid in found.items()}


def _listener(port: int, pid: int | None) -> Listener:
    if pid is None:
        return Listener(port)
    cwd: str | None = None
    cmdline: tuple[str, ...] | None = None
    try:
        process = psutil.Process(pid)
        # Each read may be refused on its own (another user's process): keep what is allowed.
        with contextlib.suppress(psutil.AccessDenied):
            cwd = process.cwd()
        with contextlib.suppress(psutil.AccessDenied):
            cmdline = tuple(process.cmdline())
    except psutil.NoSuchProcess:
        pass
    return Listener(port, pid, cwd, cmdline)


def probe_entrypoints(paths: Iterable[str]) -> dict[str, str]:
    """Each existing entrypoint -> its real path (symlinks resolved); missing ones are absent."""
    return {path: os.path.realpath(path) for path in paths if os.path.exists(path)}
