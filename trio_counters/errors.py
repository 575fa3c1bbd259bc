"""What can go wrong in the counter store, as exceptions the HTTP layer can map.

Every store raises only these (plus ``trio.Cancelled``, which is never caught)::

    StoreError
    ├── CounterNotFound      the name has never been set          -> 404
    ├── CounterOverflow      an increment would leave int64       -> 409
    ├── CounterCorrupt       the stored value is not an API value -> 409
    ├── TooManyCounters      a new name past the counter limit    -> 507
    ├── StoreMisconfigured   the store refuses how it is set up   -> 500
    └── StoreUnavailable     the store cannot answer right now    -> 503

A refused operation changes nothing: each exception is raised before the
table is written. Only :class:`StoreUnavailable` says that trying again may help.
"""

from __future__ import annotations

__all__ = [
    "StoreError",
    "CounterNotFound",
    "CounterOverflow",
    "CounterCorrupt",
    "TooManyCounters",
    "StoreMisconfigured",
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


class CounterCorrupt(StoreError):
    """The stored value is not one the API can show: something else wrote it.

    Only a shared store (``redis``) can hold one. Values follow the API's rule: a
    signed 64-bit integer in canonical form (ASCII digits, ``-`` as the only sign,
    no leading zeros), so that what ``/get`` shows is what ``/set`` would store.
    Reading or incrementing it is refused and changes nothing; ``set`` replaces it.
    """

    def __init__(self, name: str, stored: str | bytes) -> None:
        shown = repr(stored[:40])  # repr: one line, whatever the value holds
        if len(stored) > 40:
            unit = "bytes" if isinstance(stored, bytes) else "characters"
            shown += f" (the first 40 of {len(stored)} {unit})"
        super().__init__(
            f"{name} holds {shown}, not a signed 64-bit integer in canonical form; "
            "/set replaces it"
        )
        self.name = name
        self.stored = stored


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


class StoreMisconfigured(StoreError):
    """The store refuses how the server is set up: trying again will not help.

    For ``redis``: a database Redis does not have (``DB index is out of range``), a
    password or user it refuses, or its key holding something other than a hash.
    Nothing was changed; an operator must act.
    """


class StoreUnavailable(StoreError):
    """The store cannot answer: it is shutting down, has stopped, or timed out.

    For ``inc`` this means the increment may or may not have been applied.
    """
