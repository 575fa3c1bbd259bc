"""From a recorded race to what the renderers draw: a grid of cells and a verdict.

One row per task, one column per batch. A cell holds what the task did in its
one step of that batch (a task steps at most once per batch), one line per event;
``wait`` when the task was alive but not scheduled; empty before it started and
after it returned. The terminal, the SVG and ``--json`` all show this same grid.

Who erased whom is derived from the events alone: each write carries a set of
increments (the writer's own, plus those in the value it read), and a write
erases the increments in the value it replaces that its own set lacks. A write
with no read before it (the channel manager's) read at the moment it wrote.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
from collections.abc import Iterable
from typing import Any

from .recorder import Event
from .run import MANAGER, Race

__all__ = ["DRAWN_UP_TO", "Cell", "Line", "Timeline", "Write"]

#: The largest n drawn row by row; a larger race is summarised.
DRAWN_UP_TO = 12


@dataclasses.dataclass(frozen=True)
class Line:
    #: The event kind it shows (the renderers colour by it), or "erased".
    kind: str
    text: str


@dataclasses.dataclass(frozen=True)
class Cell:
    #: ``step`` (ran in this batch), ``wait`` (alive, not scheduled) or ``""`` (not alive).
    state: str
    lines: tuple[Line, ...] = ()


@dataclasses.dataclass(frozen=True)
class Write:
    """One write, and the increments it erased."""

    #: Whose increment it was (for the manager's writes: the requester's).
    task: str
    batch: int
    value: int
    #: The value it replaced, and the value its task had read (None: read as it wrote).
    was: int
    read: int | None
    #: The tasks whose increments this write erased, in the order they wrote.
    erased: tuple[str, ...]
    #: The store's own count of what the write erased (naive only).
    overwrote: int | None


class Timeline:
    """A race's grid (built only when asked for: it has n rows and about 2n columns
    for ``lock``) and its verdict."""

    def __init__(self, race: Race) -> None:
        self.race = race
        self.batches = max((step.batch for step in race.steps), default=0)
        self._senders = {e.detail["command"]: e.task for e in race.events if e.kind == "send"}
        self._writes = _writes(race.events, self._senders)
        self.writes = tuple(write for _, write in self._writes)

    @functools.cached_property
    def rows(self) -> dict[str, tuple[Cell, ...]]:
        """The cells of each task's row, one per batch."""
        ran = {(step.task, step.batch) for step in self.race.steps}
        events: dict[tuple[str, int], list[Event]] = collections.defaultdict(list)
        for event in self.race.events:
            events[event.task, event.batch].append(event)
        by_event = {id(event): write for event, write in self._writes}
        every = range(1, self.batches + 1)
        rows = {}
        for task in self.race.tasks:
            mine = [b for b in every if (task, b) in ran]
            first, last = (1, self.batches) if task == MANAGER else (mine[0], mine[-1])
            rows[task] = tuple(
                Cell("step", tuple(_lines(events[task, b], by_event)))
                if (task, b) in ran
                else Cell("wait" if first <= b <= last else "")
                for b in every
            )
        return rows

    @property
    def title(self) -> str:
        return f"{self.race.label}: {self.race.n} increments of one counter, started together"

    def widths(self) -> list[int]:
        """Each column's width in characters: its header's or its longest line's."""
        columns = [[row[b] for row in self.rows.values()] for b in range(self.batches)]
        return [
            max([len(f"batch {b + 1}")] + [len(ln.text) for cell in column for ln in cell.lines])
            for b, column in enumerate(columns)
        ]

    @property
    def store_lost(self) -> int | None:
        """What the store counted as lost, if it counts (naive)."""
        race = self.race.statistics.race
        return None if race is None else race.lost_updates

    def verdict(self) -> list[Line]:
        r = self.race
        if r.lost:
            updates = "update" if r.lost == 1 else "updates"
            text = f"final {r.final}, expected {r.expected}: {r.lost} {updates} lost"
            if self.store_lost is not None:
                text += f" (the store's own count: {self.store_lost})"
            lines = [Line("lost", text)]
        else:
            lines = [Line("ok", f"final {r.final}, expected {r.expected}: nothing lost")]
        for w in self.writes:
            if w.erased:
                erased = ", ".join(f"{task}'s" for task in w.erased)
                text = f"{w.task} wrote {w.value} over {w.was}: erased {erased} increment"
                lines.append(Line("erased", text))
        return lines

    def summary(self) -> list[str]:
        """The race in a few lines, for an n too large to draw."""
        reads = collections.Counter(e.value for e in self.race.events if e.kind == "read")
        turns = [len(applied) for applied in _turns(self.race.events)]
        lines = [f"{self.batches} batches, {len(self.race.steps)} task steps"]
        lines.append(f"reads saw: {_histogram(reads) if reads else 'no read outside the manager'}")
        if turns:
            turns_text = f"{len(turns)} turn(s), commands applied per turn: {_runs(turns)}"
            lines.append(f"manager: {turns_text}")
        return lines

    def as_json(self, *, grid: bool = True) -> dict[str, Any]:
        """Everything, as JSON-ready data; ``grid=False`` leaves the cells out (null)."""
        r = self.race
        return {
            "strategy": r.strategy,
            "database": r.database,
            "n": r.n,
            "final": r.final,
            "expected": r.expected,
            "lost": r.lost,
            "store_lost": self.store_lost,
            "batches": self.batches,
            "tasks": list(r.tasks),
            "steps": [dataclasses.asdict(step) for step in r.steps],
            "events": [event.as_json() for event in r.events],
            "writes": [dataclasses.asdict(write) for write in self.writes],
            "timeline": {
                task: [{"state": c.state, "lines": [line.text for line in c.lines]} for c in cells]
                for task, cells in self.rows.items()
            }
            if grid
            else None,
            "verdict": [line.text for line in self.verdict()],
        }


def _lines(events: list[Event], writes: dict[int, Write]) -> Iterable[Line]:
    if not events:
        yield Line("ran", "ran")
        return
    applies = sum(e.kind == "apply" for e in events)
    if applies:
        yield Line("apply", f"applies {applies}")
    for e in events:
        write = writes.get(id(e))
        if e.kind == "apply":
            continue  # shown with the write that follows it
        elif write is not None and applies:
            yield Line("write", f"{write.task} → {write.value}")
        elif write is not None:
            # What the write replaced, when it is not what this task read.
            over = "" if write.read in (None, write.was) else f" over {write.was}"
            yield Line("write", f"wrote {write.value}{over}")
            if write.erased:
                yield Line("erased", "erased " + ", ".join(write.erased))
        else:
            yield Line(e.kind, _describe(e))


def _describe(e: Event) -> str:
    d = e.detail
    match e.kind:
        case "read":
            return f"read {e.value}"
        case "checkpoint":
            return "checkpoint"
        case "lock.wanted":
            return "wants lock"
        case "lock.acquired":
            return "got lock"
        case "lock.released":
            return "released"
        case "send":
            return f"sends {d.get('op', 'command')}"
        case "send.blocked":
            return "manager busy"
        case "reply":
            return "got reply"
        case "commit" if e.value is not None:
            return f"commits {e.value}"
        case "commit":
            writes, rows = d.get("writes"), d.get("rows")
            return f"commits {writes} writes" + ("" if rows is None else f" ({rows} row{'s' * (rows != 1)})")
        case "committed":
            return "committed"
    # A kind this module does not know (a newer store's): show it as it came.
    extra = " ".join(f"{k}={v}" for k, v in d.items() if k != "command")
    return " ".join(str(part) for part in (e.kind, e.value, extra) if part not in (None, ""))


def _writes(events: Iterable[Event], senders: dict[int, str]) -> list[tuple[Event, Write]]:
    """Every write event, with the increments it erased (see the module docstring)."""
    holds: dict[str, frozenset[str]] = collections.defaultdict(frozenset)  # per counter
    read: dict[str, tuple[int | None, frozenset[str]]] = {}  # per task: its read's value, held
    requester: dict[str, str] = {}  # per task: the command the manager is applying
    written: dict[str, int] = {}  # per task: the order of its write
    writes: list[tuple[Event, Write]] = []
    for e in events:
        if e.kind == "read":
            read[e.task] = (e.value, holds[e.name])
        elif e.kind == "apply":
            requester[e.task] = senders.get(e.detail.get("command"), "?")
        elif e.kind == "write":
            seen, base = read.pop(e.task, (None, holds[e.name]))
            whose = requester.pop(e.task, e.task)
            erased = holds[e.name] - base
            order = sorted(erased, key=written.__getitem__)
            written[whose] = len(written)
            holds[e.name] = base | {whose}
            overwrote = e.detail.get("overwrote")
            write = Write(whose, e.batch, e.value, e.detail["was"], seen, tuple(order), overwrote)
            writes.append((e, write))
    return writes


def _turns(events: Iterable[Event]) -> list[list[Event]]:
    """The manager's applies, grouped by the step they happened in."""
    turns: dict[int, list[Event]] = collections.defaultdict(list)
    for e in events:
        if e.kind == "apply":
            turns[e.step].append(e)
    return list(turns.values())


def _histogram(counts: collections.Counter[Any]) -> str:
    """``0 ×200`` or ``0..199 ×1 each``: consecutive values seen equally often, as runs."""
    parts, values = [], sorted(counts)
    i = 0
    while i < len(values):
        j = i
        while (
            j + 1 < len(values)
            and values[j + 1] == values[j] + 1
            and counts[values[j + 1]] == counts[values[i]]
        ):
            j += 1
        span = f"{values[i]}" if i == j else f"{values[i]}..{values[j]}"
        parts.append(f"{span} ×{counts[values[i]]}" + (" each" if i != j else ""))
        i = j + 1
    return ", ".join(parts)


def _runs(numbers: list[int]) -> str:
    """``200`` or ``1, 199`` or ``1 ×3, 2``: repeats collapsed."""
    groups = ((value, len(list(group))) for value, group in itertools.groupby(numbers))
    return ", ".join(f"{value}" if size == 1 else f"{value} ×{size}" for value, size in groups)
