"""What the in-process strategies share: the table, and where their writes go first.

``naive``, ``lock`` and ``channel`` keep their counters in a :class:`CounterTable`,
and each reaches, between computing a write and making it, the point where a real
store does its I/O. There they await ``self._io.commit(rows, writes=n, then=write)``:

- :class:`StandIn`, without a database: one checkpoint (``trio.sleep(0)``) standing
  for that I/O, then the write -- the counts live in memory only;
- :class:`~trio_counters.stores.sqlite.Database`, with the ``database`` setting: the
  commit to the SQLite file, then the write -- the I/O is real.

Either way the write to memory (``then``) follows with no checkpoint in between, so
each strategy has the same shape, and the same race or the same guard, in both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import trio

from .base import CounterStore, CounterTable, StoreStatistics, Tracer
from .sqlite import Database

__all__ = ["STAND_IN", "InProcessStore", "StandIn"]

T = TypeVar("T")


class StandIn:
    """The I/O of a real store, stood in by one checkpoint; nothing is kept anywhere."""

    def announce(self, trace: Tracer, name: str, value: int | None = None, /, **detail: Any) -> None:
        """Report, before the stand-in, that the strategy reaches its checkpoint."""
        trace("checkpoint", name)

    async def commit(self, rows: Mapping[str, int], *, writes: int, then: Callable[[], T]) -> T:
        # Stands for the I/O of a real store: every other ready task runs here.
        await trio.sleep(0)
        return then()


#: The one stand-in; it holds no state.
STAND_IN = StandIn()


class InProcessStore(CounterStore):
    """A table in this process, and optionally the database file that keeps it.

    Without a database, ``initial`` counters are created at 0 in memory and ``serve``
    has nothing to run. With one, ``serve`` opens the file, loads the table from it
    (creating ``initial`` at 0 only where absent), reports ready, and closes the file
    when the store is closed or cancelled.
    """

    def __init__(
        self, *, max_counters: int, initial: Iterable[str] = (), database: Database | None = None
    ) -> None:
        self._database = database
        self._io: StandIn | Database = STAND_IN if database is None else database
        self._initial = tuple(initial)
        self._table = CounterTable(max_counters=max_counters, initial=() if database else self._initial)
        self._stopped = trio.Event()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self._database is None:
            task_status.started()
            return
        async with self._database.opened(self._table, self._initial):
            task_status.started()
            await self._stopped.wait()

    def close(self) -> None:
        self._stopped.set()

    def _statistics(self, **fields: Any) -> StoreStatistics:
        return StoreStatistics(
            strategy=self.strategy,
            counters=len(self._table),
            max_counters=self._table.max_counters,
            database=None if self._database is None else self._database.statistics(),
            **fields,
        )
