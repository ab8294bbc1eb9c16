"""The ``[http]`` table of ``mlsup.toml`` and ``mlsup start --http ADDR``: parsed and validated
here, from the raw TOML mapping (the manifest keeps the table opaque).

Light on purpose: the supervisor imports it to decide whether the gateway runs, without the
gateway extra (FastAPI, uvicorn) installed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlsup import defaults
from mlsup.errors import ConfigError

__all__ = ["API_KEY_ENV", "HttpSettings", "parse_listen"]

#: The gateway process receives the API key in this variable, never on its command line (which
#: every local user can read in ``ps``).
API_KEY_ENV = "MLSUP_GATEWAY_API_KEY"
_KEYS = ("listen", "api_key", "max_queue")


@dataclass(frozen=True)
class HttpSettings:
    """Where the gateway listens, the Bearer key it requires (None: none), its queue bound."""

    host: str
    port: int
    api_key: str | None = None
    max_queue: int = defaults.GATEWAY_MAX_QUEUE

    @property
    def listen(self) -> str:
        """``host:port``, with brackets around an IPv6 host."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @classmethod
    def parse(cls, table: Any, source: str, *, listen: str | None = None) -> HttpSettings | None:
        """The ``[http]`` table (None when absent), with ``listen`` (``--http``) overriding its
        address; None when neither gives an address: the gateway does not run."""
        if table is None:
            table = {}
        if not isinstance(table, Mapping):
            raise _error(source, None, 'must be a table: [http] listen = "127.0.0.1:8000"')
        unknown = sorted(set(table) - set(_KEYS))
        if unknown:
            raise _error(source, unknown[0], f"unknown key; [http] takes {', '.join(_KEYS)}")
        address = listen if listen is not None else table.get("listen")
        if address is None:
            return None
        if not isinstance(address, str):
            problem = f'must be a string like "127.0.0.1:8000", not {address!r}'
            raise _error(source, "listen", problem)
        host, port = parse_listen(address, source)
        api_key = table.get("api_key")
        if api_key is not None and (not isinstance(api_key, str) or not api_key.strip()):
            raise _error(source, "api_key", "must be a non-empty string")
        max_queue = table.get("max_queue", defaults.GATEWAY_MAX_QUEUE)
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 1:
            raise _error(source, "max_queue", f"must be a positive integer, not {max_queue!r}")
        return cls(host=host, port=port, api_key=api_key, max_queue=max_queue)


def parse_listen(address: str, source: str = "--http") -> tuple[str, int]:
    """``"8000"`` (loopback), ``"0.0.0.0:8000"``, ``"localhost:8000"`` or ``"[::1]:8000"`` as
    (host, port); ConfigError saying the expected form otherwise."""
    text = address.strip()
    if text.isdigit():
        host, port_text = defaults.GATEWAY_HOST, text
    elif text.startswith("["):
        inner, sep, port_text = text[1:].partition("]:")
        host = inner if sep else ""
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            host = ""
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise _error(
            source,
            "listen",
            f"{address!r} is not an address: use PORT, HOST:PORT or [IPv6]:PORT "
            "(for example 127.0.0.1:8000)",
        )
    if not _valid_host(host):
        raise _error(source, "listen", f"{host!r} is neither an IP address nor a host name")
    return host, int(port_text)


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        labels = host.split(".")
        return all(label and (label.replace("-", "").isalnum()) for label in labels)
    return True


def _error(source: str, key: str | None, problem: str) -> ConfigError:
    field = "http" if key is None else f"http.{key}"
    where = f"{source}: [http]" if key is None else f"{source}: [http] {key}"
    return ConfigError(f"{where} {problem}", file=source, field=field)
