"""Lease priorities: an ordered enum, parsed from configuration strings.

The one place priority names are spelt: everything else derives them from :class:`Priority`
(:meth:`Priority.names`, :attr:`Priority.label`, :meth:`Priority.parse`).
"""

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

    @property
    def label(self) -> str:
        """The name configuration and tools use: ``"high"``."""
        return self.name.lower()

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """Every label, lowest first: what a manifest's ``priority`` and ``--priority`` accept."""
        return tuple(member.label for member in cls)

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
        raise ConfigError(
            f"unknown priority {value!r}; use one of: {', '.join(cls.names())}",
            priority=repr(value),
        )
