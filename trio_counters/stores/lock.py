"""The lock strategy: the naive store's steps, under one ``trio.Lock``.

The seed's second Go server, with a mutex. The checkpoint between read and write
is still there (it stands for a real store's I/O), so the lock is the only
difference from :mod:`trio_counters.stores.naive`: while one task is between its
read and its write, every other task waits at ``async with self._lock``.
``trio.Lock`` is fair (first come, first served), so no request starves.

That wait is the lock's price under load: held across a checkpoint, it lets one
holder through per scheduling round, so N queued increments take about 2N rounds
where naive's take two (docs/strategies.md has the figures). A critical section
with no ``await`` needs no lock at all in trio.
"""

from __future__ import annotations

from collections.abc import Iterable

import trio

from .base import CounterStore, CounterTable, LockGuardStatistics, StoreStatistics

__all__ = ["LockStore"]


class LockStore(CounterStore):
    strategy = "lock"

    def __init__(self, *, max_counters: int, initial: Iterable[str] = ()) -> None:
        self._table = CounterTable(max_counters=max_counters, initial=initial)
        self._lock = trio.Lock()

    async def get(self, name: str) -> int:
        async with self._lock:
            await trio.sleep(0)  # stands for the I/O of a real store
            return self._table.get(name)

    async def set(self, name: str, value: int) -> None:
        async with self._lock:
            await trio.sleep(0)  # stands for the I/O of a real store
            self._table.set(name, value)

    async def inc(self, name: str) -> None:
        trace = self.tracer
        if trace is not None:
            trace("lock.wanted", name, held=self._lock.locked())
        async with self._lock:
            new_value = self._table.incremented(name)  # read
            if trace is not None:
                trace("lock.acquired", name)
                trace("read", name, new_value - 1)
                trace("checkpoint", name)
            await trio.sleep(0)  # the naive store's race window, now closed by the lock
            if trace is not None:
                trace("write", name, new_value, was=self._table.get(name))
            self._table.set(name, new_value)  # write
        if trace is not None:
            trace("lock.released", name)

    def statistics(self) -> StoreStatistics:
        lock = self._lock.statistics()
        return StoreStatistics(
            strategy=self.strategy,
            counters=len(self._table),
            max_counters=self._table.max_counters,
            guard=LockGuardStatistics(locked=lock.locked, tasks_waiting=lock.tasks_waiting),
        )
