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

With a database (the ``database`` setting) the stand-in becomes real I/O: read,
await the commit of the new value, write. The updates are still lost, now through
a real commit, and still counted exactly. The file and memory agree: each commit
writes the value its write then puts in memory, commits are made one at a time,
and each write follows its commit with no checkpoint in between, so memory is
written in commit order and ends where the file does. A new name reserves its
place under ``max_counters`` before its commit, so no write to memory can be
refused after the file took it.
"""

from __future__ import annotations

import collections
import heapq
import logging
from collections.abc import Iterable
from functools import partial

import trio

from ..errors import StoreError
from .base import RaceStatistics, StoreStatistics
from .in_process import InProcessStore
from .sqlite import Database

__all__ = ["NaiveStore"]

logger = logging.getLogger(__name__)


class NaiveStore(InProcessStore):
    strategy = "naive"

    def __init__(
        self, *, max_counters: int, initial: Iterable[str] = (), database: Database | None = None
    ) -> None:
        super().__init__(max_counters=max_counters, initial=initial, database=database)
        # New names whose set is on its way to the table: each holds a place under
        # max_counters, so the write that follows its commit cannot be refused.
        self._creating: collections.Counter[str] = collections.Counter()
        # The race's bookkeeping, kept beside the table: increments lost per
        # counter since its last set, and how many times each counter was set
        # (so an increment can tell that a set happened between its read and write).
        self._lost: dict[str, int] = {}
        self._lost_total = 0
        self._sets: dict[str, int] = {}
        self._overwritten_sets = 0
        self._reported = False

    async def get(self, name: str) -> int:
        # Stands for the I/O of a real store. (With a database, reads are served from
        # memory, which holds only committed values.)
        await trio.sleep(0)
        return self._table.get(name)

    async def set(self, name: str, value: int) -> None:
        creating = name not in self._table
        if creating and name not in self._creating:
            try:
                self._table.check_room(name, pending=len(self._creating))
            except StoreError:
                await trio.lowlevel.checkpoint()  # async methods checkpoint, refusals too
                raise
        if creating:
            self._creating[name] += 1
        try:
            await self._io.commit({name: value}, writes=1, then=partial(self._write_set, name, value))
        finally:
            if creating:
                self._creating[name] -= 1
                if not self._creating[name]:
                    del self._creating[name]

    def _write_set(self, name: str, value: int) -> None:
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
            self._io.announce(trace, name, new_value)
        # The I/O a real store does between read and write: the stand-in's checkpoint,
        # or the commit of new_value to the database. Other tasks run here, read the
        # same old value, and all write the same new one: this await is what exposes
        # the race.
        await self._io.commit(
            {name: new_value}, writes=1, then=partial(self._write_inc, name, new_value, sets_at_read)
        )

    def _write_inc(self, name: str, new_value: int, sets_at_read: int) -> None:
        current = self._table.get(name)
        self._table.set(name, new_value)  # write, over whatever they wrote
        trace = self.tracer
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
        return self._statistics(
            race=RaceStatistics(
                lost_updates=self._lost_total,
                overwritten_sets=self._overwritten_sets,
                worst=tuple(worst),
            ),
        )
