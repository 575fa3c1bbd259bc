"""The recorder: a store's tracer and a trio instrument, writing one list of events.

Two sources, one record:

- the store calls the recorder as its ``tracer`` at each step of an operation
  (``recorder(kind, name, value=None, **detail)``), and the recorder stamps the
  event with the task running it and that task's current step;
- as a :class:`trio.abc.Instrument`, the recorder sees every task step
  (``before_task_step``) and every pass of trio's scheduler (``after_io_wait``).

A *batch* is what trio runs in one pass of its run loop: each pass waits for I/O
(``before_io_wait``/``after_io_wait``, called on every pass, with a timeout of 0
when tasks are ready), then takes a snapshot of the run queue and steps each of
those tasks once. A task made runnable during the batch waits for the next pass.
So ``after_io_wait`` is where one batch ends and the next begins, and no task
steps twice in one batch.

Only the tasks named in ``watch`` are recorded, and only batches in which one of
them steps are counted: batches and steps are numbered 1, 2, ... among those.

Event kinds are an open set of strings (:data:`KINDS` lists the ones the in-process
stores emit); the recorder keeps any kind it is given, so a new store adds kinds
without touching it. Recording never awaits, so it moves no checkpoint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import trio

from ..stores.base import CounterStore

__all__ = ["KINDS", "Event", "Recorder", "Step"]

#: The kinds the in-process stores emit, and what each means.
KINDS: dict[str, str] = {
    "read": "read the counter: value is what it saw",
    "checkpoint": "reached the checkpoint that stands for a real store's I/O (trio.sleep(0))",
    "write": "wrote value; was: the value it replaced; overwrote (naive): how many "
    "increments that write erased, as the store counts them",
    "lock.wanted": "asks for the lock; held: whether another task holds it",
    "lock.acquired": "holds the lock",
    "lock.released": "let go of the lock",
    "send": "sends its command (op) to the manager; command: the command's id",
    "send.blocked": "the manager is busy: waits to hand its command over",
    "apply": "the manager applies a command (op, command); its write follows",
    "reply": "got the manager's answer",
    # With a database (python -m trio_counters.race --durable):
    "commit": "hands its writes to the database, one transaction in a worker thread, in "
    "the checkpoint's place; value: the value committed (naive, lock); writes, rows: "
    "what the manager's transaction carries (channel). The write that follows is made "
    "as the commit returns",
    "committed": "the manager's transaction returned: memory is written, every command answered",
}


@dataclasses.dataclass(frozen=True)
class Step:
    """One step of a watched task: trio resumed it, it ran until its next yield."""

    #: The task's name.
    task: str
    #: The batch (scheduler pass) it ran in, counted among batches with a watched step.
    batch: int
    #: Its place among all watched steps, in the order they ran.
    step: int


@dataclasses.dataclass(frozen=True)
class Event:
    """One thing a store reported through its tracer."""

    #: The task that did it.
    task: str
    #: The batch and step it happened in (0 if outside a watched step).
    batch: int
    step: int
    #: What happened: one of :data:`KINDS`, or a kind a newer store added.
    kind: str
    #: The counter's name.
    name: str
    #: The number it read or wrote, if any.
    value: int | None
    #: Anything else the store said (``was``, ``held``, ``command``, ...).
    detail: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "batch": self.batch,
            "step": self.step,
            "kind": self.kind,
            "name": self.name,
            "value": self.value,
            **self.detail,
        }


class Recorder(trio.abc.Instrument):
    """Records the watched tasks' steps and the events their store reports."""

    def __init__(self, watch: Iterable[str]) -> None:
        self.watch = frozenset(watch)
        self.steps: list[Step] = []
        self.events: list[Event] = []
        self._batch = self._step = 0
        self._new_batch = True
        self._current: Step | None = None

    # -- the tracer ---------------------------------------------------------

    def __call__(self, kind: str, name: str, value: int | None = None, /, **detail: Any) -> None:
        current = self._current
        if current is not None:
            task, batch, step = current.task, current.batch, current.step
        else:
            task, batch, step = trio.lowlevel.current_task().name, 0, 0
        self.events.append(Event(task, batch, step, kind, name, value, detail))

    # -- the instrument -----------------------------------------------------

    def after_io_wait(self, timeout: float) -> None:
        self._new_batch = True

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name not in self.watch:
            return
        if self._new_batch:
            self._new_batch = False
            self._batch += 1
        self._step += 1
        self._current = Step(task.name, self._batch, self._step)
        self.steps.append(self._current)

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        self._current = None

    @contextmanager
    def recording(self, store: CounterStore) -> Iterator[None]:
        """Record ``store``'s events and the scheduler for the block's duration."""
        trio.lowlevel.add_instrument(self)
        store.tracer = self
        try:
            yield
        finally:
            store.tracer = None
            trio.lowlevel.remove_instrument(self)
