"""Lease priorities: an ordered enum, parsed from configuration strings."""

from __future__ import annotations

import enum

from mlsup.errors import ConfigError

__all__ = ["Priority"]


class Priority(enum.IntEnum):
    """How important a lease is. Higher values may preempt strictly lower ones.

    Equal priorities never preempt each other; they queue in arrival order.
    """

    LOW = 0
    NORMAL = 1
    HIGH = 2
    CRITICAL = 3

    @classmethod
    def parse(cls, value: Priority | str | int) -> Priority:
        """A priority from an enum member, a name (``"high"``, any case) or its number.

        Raises :class:`ConfigError` naming the accepted values for anything else.
        """
        if isinstance(value, Priority):
            return value
        if isinstance(value, str):
            try:
                return cls[value.strip().upper()]
            except KeyError:
                pass
        elif isinstance(value, int) and not isinstance(value, bool):
            try:
                return cls(value)
            except ValueError:
                pass
        names = ", ".join(member.name.lower() for member in cls)
        raise ConfigError(f"unknown priority {value!r}; use one of: {names}", priority=repr(value))
