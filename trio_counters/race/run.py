"""One race: n increments of one fresh counter, started together, through a real store."""

from __future__ import annotations

import dataclasses
from contextlib import nullcontext
from typing import TypeVar

import trio

from ..stores import StoreStatistics, make_store
from .recorder import Event, Recorder, Step

__all__ = ["COUNTER", "MANAGER", "Race", "increment_task", "run_race"]

_Record = TypeVar("_Record", Step, Event)

#: The counter every race increments, created at 0.
COUNTER = "race"
#: The channel store's manager task, by name.
MANAGER = "manager"


def increment_task(i: int) -> str:
    """The name of the i-th increment's task (1-based)."""
    return f"inc{i}"


@dataclasses.dataclass(frozen=True)
class Race:
    """What one race did: the record (if traced) and the outcome."""

    strategy: str
    #: How many increments were started together.
    n: int
    #: The watched tasks, in row order: the increments, then the manager if any.
    tasks: tuple[str, ...]
    #: The counter's value after every increment returned.
    final: int
    #: The store's statistics at the end (naive's own count of what it lost among them).
    statistics: StoreStatistics
    #: The recorded steps and events; empty when run untraced.
    steps: tuple[Step, ...] = ()
    events: tuple[Event, ...] = ()
    #: The SQLite file the store committed to; ``None``: in memory, with the stand-in.
    database: str | None = None

    @property
    def label(self) -> str:
        """The strategy, and whether its I/O was real."""
        return f"{self.strategy} + database" if self.database else self.strategy

    @property
    def expected(self) -> int:
        return self.n

    @property
    def lost(self) -> int:
        return self.expected - self.final


async def run_race(strategy: str, n: int, *, traced: bool = True, database: str | None = None) -> Race:
    """Increment one fresh counter from n tasks started together, the way the server does.

    The store comes from :func:`~trio_counters.stores.make_store`, its ``serve`` is
    started with the nursery start protocol and it is closed at the end, as the app
    does. With ``traced``, a :class:`Recorder` watches from the first increment's
    start until the last one returns. With ``database`` (a path; give a fresh one),
    the store commits to that SQLite file where it would reach its stand-in checkpoint.
    """
    store = make_store(strategy, max_counters=1, initial=[COUNTER], database=database)
    incs = tuple(increment_task(i) for i in range(1, n + 1))
    recorder = Recorder(incs + (MANAGER,))
    async with trio.open_nursery() as nursery:
        await nursery.start(store.serve, name=MANAGER)
        try:
            with recorder.recording(store) if traced else nullcontext():
                async with trio.open_nursery() as increments:
                    for task in incs:
                        increments.start_soon(store.inc, COUNTER, name=task)
            final = await store.get(COUNTER)
        finally:
            store.close()
    # Number the increments in the order they first ran (trio may reverse a batch),
    # so inc1 is always the first to run and the rows read top to bottom.
    first_run = dict.fromkeys(step.task for step in recorder.steps if step.task != MANAGER)
    rename = {task: increment_task(i) for i, task in enumerate(first_run, start=1)}
    manager_ran = MANAGER in {step.task for step in recorder.steps}
    return Race(
        strategy=strategy,
        n=n,
        tasks=incs + (MANAGER,) if manager_ran else incs,
        final=final,
        statistics=store.statistics(),
        steps=tuple(_renamed(step, rename) for step in recorder.steps),
        events=tuple(_renamed(event, rename) for event in recorder.events),
        database=database,
    )


def _renamed(record: _Record, rename: dict[str, str]) -> _Record:
    return dataclasses.replace(record, task=rename.get(record.task, record.task))
