"""The counter stores: one module per strategy, one interface for all.

- :mod:`.naive`   read, checkpoint, write: loses updates (for teaching)
- :mod:`.lock`    the same steps under a ``trio.Lock``
- :mod:`.channel` one manager task owns the table; handlers send it commands
"""

from __future__ import annotations

from collections.abc import Iterable

from .base import INT64_MAX, INT64_MIN, CounterStore, CounterTable, StoreStatistics
from .channel import ChannelStore
from .lock import LockStore
from .naive import NaiveStore

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "ChannelStore",
    "CounterStore",
    "CounterTable",
    "LockStore",
    "NaiveStore",
    "StoreStatistics",
    "make_store",
]


def make_store(
    strategy: str, *, max_counters: int, initial: Iterable[str] = (), channel_buffer: int = 0
) -> CounterStore:
    """Build the store for a strategy name (``naive``, ``lock`` or ``channel``)."""
    if strategy == "naive":
        return NaiveStore(max_counters=max_counters, initial=initial)
    if strategy == "lock":
        return LockStore(max_counters=max_counters, initial=initial)
    if strategy == "channel":
        return ChannelStore(max_counters=max_counters, initial=initial, buffer_size=channel_buffer)
    raise ValueError(f"unknown strategy {strategy!r}")
