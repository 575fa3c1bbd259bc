"""The counter stores: one module per strategy, one interface for all.

- :mod:`.naive`   read, checkpoint, write: loses updates (for teaching)
- :mod:`.lock`    the same steps under a ``trio.Lock``
- :mod:`.channel` one manager task owns the table; handlers send it commands
- :mod:`.redis`   one Redis hash shared by every worker, one Lua script per operation
  (imported only when chosen: the in-process strategies need no Redis client),
  sent through :mod:`.redis_pipeline`'s one pipelined connection
"""

from __future__ import annotations

from collections.abc import Iterable

from ..config import DEFAULT_REDIS_TIMEOUT, DEFAULT_REDIS_URL
from .base import (
    INT64_MAX,
    INT64_MIN,
    ChannelGuardStatistics,
    CounterStore,
    CounterTable,
    GuardStatistics,
    LockGuardStatistics,
    RaceStatistics,
    RedisGuardStatistics,
    StoreStatistics,
)
from .channel import ChannelStore
from .lock import LockStore
from .naive import NaiveStore

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "ChannelGuardStatistics",
    "ChannelStore",
    "CounterStore",
    "CounterTable",
    "GuardStatistics",
    "LockGuardStatistics",
    "LockStore",
    "NaiveStore",
    "RaceStatistics",
    "RedisGuardStatistics",
    "StoreStatistics",
    "make_store",
]


def make_store(
    strategy: str,
    *,
    max_counters: int,
    initial: Iterable[str] = (),
    channel_buffer: int = 0,
    redis_url: str = DEFAULT_REDIS_URL,
    redis_timeout: float = DEFAULT_REDIS_TIMEOUT,
) -> CounterStore:
    """Build the store for a strategy name (``naive``, ``lock``, ``channel`` or ``redis``)."""
    if strategy == "naive":
        return NaiveStore(max_counters=max_counters, initial=initial)
    if strategy == "lock":
        return LockStore(max_counters=max_counters, initial=initial)
    if strategy == "channel":
        return ChannelStore(max_counters=max_counters, initial=initial, buffer_size=channel_buffer)
    if strategy == "redis":
        from .redis import RedisStore

        return RedisStore(
            url=redis_url, max_counters=max_counters, initial=initial, timeout=redis_timeout
        )
    raise ValueError(f"unknown strategy {strategy!r}")
