"""Endpoints: ``ipc://`` sockets inside the private runtime directory, or loopback TCP."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import zmq

from mlsup import defaults
from mlsup.errors import CannotListen, ConfigError
from mlsup.runtime import ENV_RUNTIME_DIR, ensure_runtime_dir

__all__ = ["bind_router", "check_endpoint", "close_router", "ipc_endpoint", "ipc_path"]

# sun_path is 108 bytes on Linux, including the terminating NUL.
_MAX_IPC_PATH = 107


def ipc_endpoint(name: str, directory: Path | None = None) -> str:
    """``ipc://<runtime dir>/<name>.sock``, creating the runtime directory (0700) if needed."""
    if not name or "/" in name or name in (".", ".."):
        raise ConfigError(f"invalid socket name {name!r}")
    path = ensure_runtime_dir(directory) / f"{name}.sock"
    if len(os.fsencode(path)) > _MAX_IPC_PATH:
        raise ConfigError(
            f"socket path {path} is longer than {_MAX_IPC_PATH} bytes; "
            f"set {ENV_RUNTIME_DIR} to a shorter directory",
            path=str(path),
        )
    return f"ipc://{path}"


def ipc_path(endpoint: str) -> Path | None:
    """The socket file of an ``ipc://`` endpoint, else None."""
    return Path(endpoint[len("ipc://") :]) if endpoint.startswith("ipc://") else None


def check_endpoint(endpoint: str) -> str:
    """endpoint itself if it is ``ipc://PATH`` or loopback ``tcp://``; ConfigError otherwise.

    Workers and the supervisor trust their peers to be this user's processes on this machine,
    so nothing may listen beyond loopback.
    """
    if endpoint.startswith("ipc://"):
        if len(endpoint) == len("ipc://"):
            raise ConfigError("ipc endpoint without a path")
        return endpoint
    if endpoint.startswith("tcp://"):
        host = urlsplit(endpoint).hostname or ""
        if host == "localhost":
            return endpoint
        try:
            if ipaddress.ip_address(host).is_loopback:
                return endpoint
        except ValueError:
            pass
        raise ConfigError(
            f"endpoint {endpoint} is not on loopback; mlsup listens on ipc:// or "
            "tcp://127.0.0.1 only",
            endpoint=endpoint,
        )
    raise ConfigError(f"unsupported endpoint {endpoint!r}: use ipc://PATH or tcp://127.0.0.1:PORT")


SocketT = TypeVar("SocketT", bound=zmq.Socket)  # type: ignore[type-arg]


def bind_router(context: zmq.Context[SocketT], endpoint: str) -> SocketT:
    """A ROUTER socket bound to endpoint; an ipc socket file is made private to this user."""
    sock = context.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, defaults.SOCKET_LINGER_MS)
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        sock.close(linger=0)
        raise CannotListen(f"cannot listen on {endpoint}: {exc}", endpoint=endpoint) from exc
    path = ipc_path(endpoint)
    if path is not None:
        path.chmod(0o600)
    return sock


def close_router(sock: zmq.Socket | None, endpoint: str) -> None:  # type: ignore[type-arg]
    """Close a socket from :func:`bind_router` and remove its ipc socket file."""
    if sock is not None:
        sock.close(linger=0)
    path = ipc_path(endpoint)
    if path is not None:
        path.unlink(missing_ok=True)
