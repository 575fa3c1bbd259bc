"""What can go wrong in the counter store, as exceptions the HTTP layer can map.

Every store raises only these (plus ``trio.Cancelled``, which is never caught)::

    StoreError
    ├── CounterNotFound      the name has never been set          -> 404
    ├── CounterOverflow      an increment would leave int64       -> 409
    ├── TooManyCounters      a new name past the counter limit    -> 507
    └── StoreUnavailable     the store cannot answer right now    -> 503

A refused operation changes nothing: each exception is raised before the
table is written.
"""

from __future__ import annotations

__all__ = [
    "StoreError",
    "CounterNotFound",
    "CounterOverflow",
    "TooManyCounters",
    "StoreUnavailable",
]


class StoreError(Exception):
    """Base class for every error the counter store raises on purpose."""


class CounterNotFound(StoreError):
    """The counter does not exist (``get`` or ``inc`` before any ``set``)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name} not found")
        self.name = name


class CounterOverflow(StoreError):
    """Adding 1 would take the counter past the signed 64-bit maximum.

    Like Redis' INCR, the value is left as it is rather than wrapping.
    """

    def __init__(self, name: str, value: int) -> None:
        super().__init__(
            f"{name} is {value}: adding 1 would leave the signed 64-bit range; value unchanged"
        )
        self.name = name
        self.value = value


class TooManyCounters(StoreError):
    """Creating one more counter would pass the configured limit.

    Existing counters keep working; only new names are refused.
    """

    def __init__(self, name: str, limit: int) -> None:
        super().__init__(
            f"cannot create {name}: the store holds its limit of {limit} counters"
        )
        self.name = name
        self.limit = limit


class StoreUnavailable(StoreError):
    """The store cannot answer: it is shutting down, has stopped, or timed out.

    For ``inc`` this means the increment may or may not have been applied.
    """
