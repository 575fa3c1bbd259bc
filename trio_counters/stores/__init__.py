"""The counter stores: one module per strategy, one interface for all.

- :mod:`.naive`   read, checkpoint, write: loses updates (for teaching)
- :mod:`.lock`    the same steps under a ``trio.Lock``
- :mod:`.channel` one manager task owns the table; handlers send it commands
- :mod:`.redis`   one Redis hash shared by every worker, one Lua script per operation
  (imported only when chosen: the in-process strategies need no Redis client),
  sent through :mod:`.redis_pipeline`'s one pipelined connection

The first three share :mod:`.in_process` (the table, and the stand-in for a real
store's I/O); with the ``database`` setting their counts are kept in an SQLite file
too: :mod:`.sqlite` (commits) and :mod:`.sqlite_file` (opening and checking it).
"""

from __future__ import annotations

from collections.abc import Iterable

from ..config import DEFAULT_DATABASE_SYNC, DEFAULT_REDIS_TIMEOUT, DEFAULT_REDIS_URL
from .base import (
    INT64_MAX,
    INT64_MIN,
    ChannelGuardStatistics,
    CounterStore,
    CounterTable,
    DatabaseStatistics,
    GuardStatistics,
    LockGuardStatistics,
    RaceStatistics,
    RedisGuardStatistics,
    StoreStatistics,
)
from .channel import ChannelStore
from .lock import LockStore
from .naive import NaiveStore
from .sqlite import Database, DatabaseUnusable

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "ChannelGuardStatistics",
    "ChannelStore",
    "CounterStore",
    "CounterTable",
    "Database",
    "DatabaseStatistics",
    "DatabaseUnusable",
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
    database: str | None = None,
    database_sync: str = DEFAULT_DATABASE_SYNC,
) -> CounterStore:
    """Build the store for a strategy name (``naive``, ``lock``, ``channel`` or ``redis``).

    ``database``: the SQLite file that keeps an in-process store's counts (opened
    when the store serves); ``None`` keeps them in memory only.
    """
    db = None if database is None else Database(database, synchronous=database_sync)
    if strategy == "naive":
        return NaiveStore(max_counters=max_counters, initial=initial, database=db)
    if strategy == "lock":
        return LockStore(max_counters=max_counters, initial=initial, database=db)
    if strategy == "channel":
        return ChannelStore(
            max_counters=max_counters, initial=initial, buffer_size=channel_buffer, database=db
        )
    if db is not None:
        raise ValueError(f"the {strategy} store keeps no database file")
    if strategy == "redis":
        from .redis import RedisStore

        return RedisStore(
            url=redis_url, max_counters=max_counters, initial=initial, timeout=redis_timeout
        )
    raise ValueError(f"unknown strategy {strategy!r}")
