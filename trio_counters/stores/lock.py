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

With a database (the ``database`` setting) the checkpoint becomes the commit of the
new value, and the lock is held across it: one transaction per write, one at a
time, each waiting for the disk (docs/durable.md). Cancelled while waiting for the
lock, a request changes nothing; once its commit is handed over, the commit and the
write to memory finish, and the cancellation lands after them.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

import trio

from .base import LockGuardStatistics, StoreStatistics
from .in_process import InProcessStore
from .sqlite import Database

__all__ = ["LockStore"]


class LockStore(InProcessStore):
    strategy = "lock"

    def __init__(
        self, *, max_counters: int, initial: Iterable[str] = (), database: Database | None = None
    ) -> None:
        super().__init__(max_counters=max_counters, initial=initial, database=database)
        self._lock = trio.Lock()

    async def get(self, name: str) -> int:
        async with self._lock:
            # Stands for the I/O of a real store. (With a database, reads are served
            # from memory, which holds only committed values.)
            await trio.sleep(0)
            return self._table.get(name)

    async def set(self, name: str, value: int) -> None:
        async with self._lock:
            self._table.check_room(name)  # refused before anything is written
            await self._io.commit({name: value}, writes=1, then=partial(self._table.set, name, value))

    async def inc(self, name: str) -> None:
        trace = self.tracer
        if trace is not None:
            trace("lock.wanted", name, held=self._lock.locked())
        async with self._lock:
            new_value = self._table.incremented(name)  # read
            if trace is not None:
                trace("lock.acquired", name)
                trace("read", name, new_value - 1)
                self._io.announce(trace, name, new_value)
            # The naive store's race window (the stand-in's checkpoint, or the commit),
            # now closed by the lock.
            await self._io.commit({name: new_value}, writes=1, then=partial(self._write, name, new_value))
        if trace is not None:
            trace("lock.released", name)

    def _write(self, name: str, new_value: int) -> None:
        trace = self.tracer
        if trace is not None:
            trace("write", name, new_value, was=self._table.get(name))
        self._table.set(name, new_value)

    def statistics(self) -> StoreStatistics:
        lock = self._lock.statistics()
        return self._statistics(
            guard=LockGuardStatistics(locked=lock.locked, tasks_waiting=lock.tasks_waiting)
        )
