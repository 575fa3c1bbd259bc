"""The store interface every strategy implements, and the table they share.

A store is what the HTTP handlers talk to. Its three operations can wait (for a
lock, for the manager task, for I/O), so they are ``async`` and, following
trio's rule, always reach a checkpoint. ``statistics()`` only reads, so it is a
plain method.

The in-process strategies keep their numbers in a :class:`CounterTable`. Its
methods are synchronous on purpose: trio switches tasks only at ``await``, so a
method with no ``await`` in it runs from start to end with no other task in
between. Each strategy differs only in what it does *around* the table.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterable
from typing import Any, ClassVar, Protocol

import trio

from ..errors import CounterNotFound, CounterOverflow, TooManyCounters

__all__ = [
    "INT64_MIN",
    "INT64_MAX",
    "ChannelGuardStatistics",
    "CounterStore",
    "CounterTable",
    "DatabaseStatistics",
    "GuardStatistics",
    "LockGuardStatistics",
    "PendingWrites",
    "RaceStatistics",
    "RedisGuardStatistics",
    "StoreStatistics",
    "Tracer",
]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


@dataclasses.dataclass(frozen=True)
class RaceStatistics:
    """What the naive store lost to its race, counted as it happens."""

    #: Increments acknowledged with ``ok`` that the value does not show: for each
    #: counter, the increments acknowledged since it was last set minus how far
    #: its value moved, summed over all counters.
    lost_updates: int
    #: Sets that a racing increment overwrote (it read before the set, wrote after).
    overwritten_sets: int
    #: The counters that lost most, largest first: at most ten ``(name, lost)`` pairs.
    worst: tuple[tuple[str, int], ...]


@dataclasses.dataclass(frozen=True)
class LockGuardStatistics:
    """The lock store's ``trio.Lock``, from its ``statistics()``."""

    #: The guard's name: the key in ``/stats`` and the prefix of its metrics.
    name: ClassVar[str] = "lock"

    #: Whether a task holds the lock: one handler is between its read and its write.
    locked: bool
    #: Tasks blocked waiting for the lock, served first come, first served.
    tasks_waiting: int


@dataclasses.dataclass(frozen=True)
class ChannelGuardStatistics:
    """The channel store's command channel and the manager task that owns the table."""

    #: The guard's name: the key in ``/stats`` and the prefix of its metrics.
    name: ClassVar[str] = "channel"

    #: Commands sent and held in the channel's buffer, not yet taken by the manager.
    buffer_used: int
    #: How many commands the buffer holds (``channel_buffer``); 0 means each sender
    #: waits until the manager takes its command.
    buffer_size: int
    #: Handlers blocked sending a command: the buffer is full, or there is none and
    #: the manager is busy (or not started yet).
    tasks_waiting_send: int
    #: 1 while the manager waits for a command (it is idle), else 0.
    tasks_waiting_receive: int
    #: Whether the channel's receiving end is open: true from the store's creation
    #: until the manager leaves (store closed, or manager cancelled). Once false,
    #: every call is refused with :class:`StoreUnavailable`.
    manager_running: bool
    #: How many times the manager failed (a bug, not a refused command) and started
    #: over on the intact table.
    manager_restarts: int


@dataclasses.dataclass(frozen=True)
class RedisGuardStatistics:
    """The redis store's link to Redis, as of this worker's last answer from it."""

    #: The guard's name: the key in ``/stats`` and the prefix of its metrics.
    name: ClassVar[str] = "redis"

    #: Whether the last call reached Redis: false before the first, after a failure,
    #: after the watchdog dropped a silent connection, and once the store stops serving.
    connected: bool
    #: Requests answered :class:`StoreUnavailable` (HTTP 503) because of Redis: refused
    #: or lost connection, an error from Redis, or its silence. Background attempts to
    #: reach Redis are not counted. Only grows.
    unavailable: int
    #: Calls queued for the next pipelined batch, not sent yet.
    queued: int


@dataclasses.dataclass(frozen=True)
class DatabaseStatistics:
    """The SQLite file an in-process store keeps its counts in (``database`` setting)."""

    #: The file's absolute path.
    file: str
    #: ``full`` (each commit reaches the disk before it is acknowledged) or ``normal``.
    synchronous: str
    #: Whether the file is open: from the start of serving until the store closes.
    open: bool
    #: Counters in the file when the store opened it (``i`` and ``j`` included).
    loaded: int
    #: Seconds opening took: checks, loading every counter, the first write.
    load_seconds: float
    #: Transactions committed for requests (``/set`` and ``/inc``). Only grows.
    commits: int
    #: Writes (sets and increments) those transactions carried: ``writes / commits``
    #: is the batch size, 1 for ``naive`` and ``lock``, often more for ``channel``.
    writes: int
    #: The most writes one transaction carried.
    largest_commit: int
    #: Seconds spent committing, summed (in the worker thread, fsync included).
    commit_seconds: float
    #: The longest commit, in seconds.
    max_commit_seconds: float
    #: Commits that failed (disk full, file read-only, I/O error): their requests got
    #: 503 and changed nothing in memory. Only grows.
    failed_commits: int
    #: Why the latest commit failed, as SQLite said it; ``None`` once one succeeds.
    last_failure: str | None
    #: Tasks waiting for the connection, which commits one transaction at a time.
    tasks_waiting: int


#: Whatever guards a store's table, with its own statistics.
GuardStatistics = LockGuardStatistics | ChannelGuardStatistics | RedisGuardStatistics


@dataclasses.dataclass(frozen=True)
class StoreStatistics:
    """A snapshot of a store, for ``/stats``, ``/metrics`` and the tests."""

    #: The strategy's name: ``naive``, ``lock``, ``channel`` or ``redis``.
    strategy: str
    #: How many counters exist.
    counters: int
    #: The most counters the store will hold.
    max_counters: int
    #: Live statistics of whatever guards the table (its ``name`` says which);
    #: ``None`` for ``naive``, which has no guard.
    guard: GuardStatistics | None = None
    #: The naive store's own count of what it lost; ``None`` for strategies that
    #: cannot lose an update.
    race: RaceStatistics | None = None
    #: The file the counts are kept in; ``None`` when they live in memory only (or in Redis).
    database: DatabaseStatistics | None = None


class CounterTable:
    """A dict of counters with the service's rules: int64 values, a size limit.

    Nothing here awaits, so every method is atomic with respect to other trio
    tasks. Every refusal is raised before anything is written.
    """

    def __init__(self, *, max_counters: int, initial: Iterable[str] = ()) -> None:
        self.max_counters = max_counters
        self._values: dict[str, int] = {}
        for name in initial:
            self.set(name, 0)

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, name: str) -> bool:
        return name in self._values

    def load(self, values: dict[str, int]) -> None:
        """Take ``values`` (a database's counters, checked against the limit) as the table."""
        self._values = values

    def get(self, name: str) -> int:
        try:
            return self._values[name]
        except KeyError:
            raise CounterNotFound(name) from None

    def set(self, name: str, value: int) -> None:
        self.check_room(name)
        self._values[name] = value

    def check_room(self, name: str, *, pending: int = 0) -> None:
        """Refuse a new name when the table, plus ``pending`` creations, is full."""
        if name not in self._values and len(self._values) + pending >= self.max_counters:
            raise TooManyCounters(name, self.max_counters)

    def incremented(self, name: str) -> int:
        """The value ``inc`` would write: the current one plus 1, within int64."""
        value = self.get(name)
        if value >= INT64_MAX:
            raise CounterOverflow(name, value)
        return value + 1


class PendingWrites:
    """Writes staged over a :class:`CounterTable`, written to it only once committed.

    The same methods and rules as the table, each checked against the table plus
    what is already staged, so a batch of commands can be answered as if applied
    one after another. :attr:`rows` is what to commit (the last value of each
    counter); :meth:`apply` writes them, and cannot fail: every refusal was raised
    when its write was staged.
    """

    def __init__(self, table: CounterTable) -> None:
        self._table = table
        #: The new value of each counter written, in the order first written.
        self.rows: dict[str, int] = {}
        #: How many writes were staged (several increments of one counter are one row).
        self.writes = 0
        self._created = 0

    def get(self, name: str) -> int:
        try:
            return self.rows[name]
        except KeyError:
            return self._table.get(name)

    def set(self, name: str, value: int) -> None:
        if name not in self.rows and name not in self._table:
            self._table.check_room(name, pending=self._created)
            self._created += 1
        self.rows[name] = value
        self.writes += 1

    def incremented(self, name: str) -> int:
        value = self.get(name)
        if value >= INT64_MAX:
            raise CounterOverflow(name, value)
        return value + 1

    def apply(self) -> None:
        for name, value in self.rows.items():
            self._table.set(name, value)


class Tracer(Protocol):
    """Told each step of a store operation as it happens (``python -m trio_counters.race``).

    ``kind`` says what the step was; kinds are an open set of strings, each with a
    documented meaning (docs/race-trace.md), and a store may add its own. ``name``
    is the counter, ``value`` the number the step read or wrote, ``detail`` the
    rest. A tracer is called synchronously, from the task taking the step (work
    in a worker thread is traced before and after ``trio.to_thread.run_sync``),
    and never blocks or checkpoints: tracing moves no checkpoint, so it cannot
    change the interleaving it records.
    """

    def __call__(self, kind: str, name: str, value: int | None = None, /, **detail: Any) -> None: ...


class CounterStore(abc.ABC):
    """What the HTTP layer needs from a strategy.

    Lifecycle: the app starts ``await nursery.start(store.serve)`` in its own
    nursery when serving begins and calls ``store.close()`` when serving ends.
    Strategies with nothing to run (``naive``, ``lock``) inherit the default,
    which reports started and returns at once, so no idle task is left behind.
    """

    #: The strategy's name, as chosen with ``TRIO_COUNTERS_STORE``.
    strategy: str

    #: Told each step of every operation when set; ``None`` (the default) costs one
    #: ``is not None`` test per step.
    tracer: Tracer | None = None

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run whatever the store needs while the app serves; report ready once."""
        task_status.started()

    def close(self) -> None:
        """Stop serving: calls after this get :class:`StoreUnavailable` where they must wait."""

    @abc.abstractmethod
    async def get(self, name: str) -> int:
        """The counter's value; :class:`CounterNotFound` if it was never set."""

    @abc.abstractmethod
    async def set(self, name: str, value: int) -> None:
        """Create or overwrite the counter; :class:`TooManyCounters` past the limit."""

    @abc.abstractmethod
    async def inc(self, name: str) -> None:
        """Add 1; :class:`CounterNotFound` or :class:`CounterOverflow` leave it unchanged."""

    @abc.abstractmethod
    def statistics(self) -> StoreStatistics:
        """A snapshot of the store's state, without waiting."""
