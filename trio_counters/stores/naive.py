"""The naive strategy: read, reach a checkpoint, write. It loses updates.

This is the seed's racy Go server, rebuilt for trio. Trio only switches tasks at
an ``await``, so a read-modify-write with no ``await`` in the middle would be
atomic and correct. A real store does I/O between reading and writing, though,
and that I/O is an ``await``; ``trio.sleep(0)`` stands in for it here. Every task
that reaches the checkpoint lets every other ready task run first, so N
increments started together all read the same value and all write value + 1:
N - 1 updates are lost, deterministically, every time. Never use it for counting.

Like Go's race detector, but exact, the store counts what it loses: when an
increment writes, every increment written since its read is overwritten. The
count is in :meth:`NaiveStore.statistics` (and so in ``/stats``), and the first
loss is logged.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Iterable

import trio

from ..errors import StoreError
from .base import CounterStore, CounterTable, RaceStatistics, StoreStatistics

__all__ = ["NaiveStore"]

logger = logging.getLogger(__name__)


class NaiveStore(CounterStore):
    strategy = "naive"

    def __init__(self, *, max_counters: int, initial: Iterable[str] = ()) -> None:
        self._table = CounterTable(max_counters=max_counters, initial=initial)
        # The race's bookkeeping, kept beside the table: increments lost per
        # counter since its last set, and how many times each counter was set
        # (so an increment can tell that a set happened between its read and write).
        self._lost: dict[str, int] = {}
        self._lost_total = 0
        self._sets: dict[str, int] = {}
        self._overwritten_sets = 0
        self._reported = False

    async def get(self, name: str) -> int:
        await trio.sleep(0)  # stands for the I/O of a real store
        return self._table.get(name)

    async def set(self, name: str, value: int) -> None:
        await trio.sleep(0)  # stands for the I/O of a real store
        self._table.set(name, value)
        self._sets[name] = self._sets.get(name, 0) + 1
        self._lost_total -= self._lost.pop(name, 0)

    async def inc(self, name: str) -> None:
        try:
            new_value = self._table.incremented(name)  # read
        except StoreError:
            await trio.lowlevel.checkpoint()  # async methods checkpoint, refusals too
            raise
        sets_at_read = self._sets.get(name, 0)
        trace = self.tracer
        if trace is not None:
            trace("read", name, new_value - 1)
            trace("checkpoint", name)
        # Stands for the I/O a real store does between read and write. Other
        # tasks run here, read the same old value, and all write the same new
        # one: this checkpoint is what exposes the race.
        await trio.sleep(0)
        current = self._table.get(name)
        self._table.set(name, new_value)  # write, over whatever they wrote
        if trace is not None:
            trace("write", name, new_value, was=current, overwrote=current - (new_value - 1))
        self._count_loss(name, sets_at_read, overwritten=current - (new_value - 1))

    def _count_loss(self, name: str, sets_at_read: int, *, overwritten: int) -> None:
        """Book what the write just destroyed.

        If the counter was set between our read and our write, we wrote over that
        set. Otherwise the value moved by ``overwritten`` since we read it, each
        step an acknowledged increment that our write now erases. It can also have
        moved *down* (a write that read before us wrote a smaller value); then our
        write puts those increments back, and the count goes down by as many, so it
        stays exactly the increments acknowledged minus how far the value moved.
        """
        if self._sets.get(name, 0) != sets_at_read:
            self._overwritten_sets += 1
            self._lost_total -= self._lost.pop(name, 0)
            return
        if overwritten == 0:
            return
        if overwritten > 0 and not self._reported:
            self._reported = True
            logger.warning(
                "naive store lost its first update: an increment of %r overwrote %d other(s); "
                "this strategy races on purpose (see /stats)",
                name,
                overwritten,
            )
        self._lost[name] = self._lost.get(name, 0) + overwritten
        self._lost_total += overwritten

    def statistics(self) -> StoreStatistics:
        worst = heapq.nlargest(10, self._lost.items(), key=lambda item: item[1])
        return StoreStatistics(
            strategy=self.strategy,
            counters=len(self._table),
            max_counters=self._table.max_counters,
            race=RaceStatistics(
                lost_updates=self._lost_total,
                overwritten_sets=self._overwritten_sets,
                worst=tuple(worst),
            ),
        )
