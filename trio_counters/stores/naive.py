"""The naive strategy: read, reach a checkpoint, write. It loses updates.

This is the seed's racy Go server, rebuilt for trio. Trio only switches tasks at
an ``await``, so a read-modify-write with no ``await`` in the middle would be
atomic and correct. A real store does I/O between reading and writing, though,
and that I/O is an ``await``; ``trio.sleep(0)`` stands in for it here. Every task
that reaches the checkpoint lets every other ready task run first, so N
increments started together all read the same value and all write value + 1:
N - 1 updates are lost, deterministically, every time. Never use it for counting.
"""

from __future__ import annotations

from collections.abc import Iterable

import trio

from ..errors import StoreError
from .base import CounterStore, CounterTable, StoreStatistics

__all__ = ["NaiveStore"]


class NaiveStore(CounterStore):
    strategy = "naive"

    def __init__(self, *, max_counters: int, initial: Iterable[str] = ()) -> None:
        self._table = CounterTable(max_counters=max_counters, initial=initial)

    async def get(self, name: str) -> int:
        await trio.sleep(0)  # stands for the I/O of a real store
        return self._table.get(name)

    async def set(self, name: str, value: int) -> None:
        await trio.sleep(0)  # stands for the I/O of a real store
        self._table.set(name, value)

    async def inc(self, name: str) -> None:
        try:
            new_value = self._table.incremented(name)  # read
        except StoreError:
            await trio.lowlevel.checkpoint()  # async methods checkpoint, refusals too
            raise
        # Stands for the I/O a real store does between read and write. Other
        # tasks run here, read the same old value, and all write the same new
        # one: this checkpoint is what exposes the race.
        await trio.sleep(0)
        self._table.set(name, new_value)  # write, over whatever they wrote

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(
            strategy=self.strategy, counters=len(self._table), max_counters=self._table.max_counters
        )
