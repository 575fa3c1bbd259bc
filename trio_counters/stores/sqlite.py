"""The counters' SQLite file at run time: one connection, one transaction at a time.

The in-process strategies keep their table in memory and, with the ``database``
setting, in this file too. :class:`Database` takes the place of the in-memory
stand-in (:class:`~trio_counters.stores.in_process.StandIn`): where a strategy
awaited a checkpoint that stood for a real store's I/O, it awaits
:meth:`Database.commit`, which is that I/O.

- **Never on the event loop.** Every sqlite3 call runs in a worker thread
  (``trio.to_thread.run_sync``). The one connection is opened in the store's
  ``serve`` (:meth:`Database.opened`) and closed when it ends; a ``trio.Lock``
  hands it to one commit at a time, first come, first served.
- **Acknowledged means committed.** :meth:`commit` runs ``then`` -- the strategy's
  write to memory -- right after the transaction commits, with no checkpoint in
  between, and only if it committed. So memory holds only committed values (a
  ``/get`` never shows anything else), and memory is written in commit order.
- **Cancellation.** A commit, once handed to its thread, finishes: the thread is not
  abandoned (``abandon_on_cancel=False``), so a cancellation that arrives meanwhile
  lands only at the caller's next checkpoint, after ``then`` has written memory.
  Cancelled before (waiting for the connection), nothing is written anywhere.
- **Failures.** A commit SQLite refuses (disk full, file read-only, I/O error) is
  rolled back, ``then`` is not run, and the caller gets :class:`StoreUnavailable`
  (HTTP 503) with SQLite's reason. Nothing else changes, so the next commit simply
  tries again: service resumes by itself once the disk has room.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio

from ..errors import StoreUnavailable
from .base import CounterTable, DatabaseStatistics, Tracer
from .sqlite_file import DatabaseUnusable, OpenFile, open_file

__all__ = ["Database", "DatabaseUnusable"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_UPSERT = "INSERT INTO counters (name, value) VALUES {} ON CONFLICT (name) DO UPDATE SET value = excluded.value"
#: Rows written by one statement; more go in several, in one explicit transaction.
#: Each statement is one call into sqlite3, and each call has to win the GIL back
#: from the event loop's thread when it returns (up to sys.getswitchinterval(),
#: 5 ms, under load): so a batch is one statement, not three (BEGIN, INSERT, COMMIT).
_ROWS_PER_STATEMENT = 500


class Database:
    """One SQLite file, owned by one store in one process."""

    def __init__(self, path: str, *, synchronous: str = "full") -> None:
        #: Absolute, so that messages and ``/stats`` name the file whatever the cwd.
        self.file = os.path.abspath(path)
        self.synchronous = synchronous
        self._open: OpenFile | None = None
        # The connection is used by one thread at a time; this hands it over, in order.
        self._turn = trio.Lock()
        self._loaded = 0
        self._load_seconds = 0.0
        self._commits = self._writes = self._largest = self._failed = 0
        self._commit_seconds = self._max_commit_seconds = 0.0
        self._last_failure: str | None = None

    def announce(self, trace: Tracer, name: str, value: int | None = None, /, **detail: Any) -> None:
        """Report, before a commit, what the strategy hands over."""
        trace("commit", name, value, **detail)

    @asynccontextmanager
    async def opened(self, table: CounterTable, initial: Iterable[str]) -> AsyncIterator[None]:
        """Open the file into ``table`` for the block's length, then close it, whatever happens.

        Opening checks the file, takes its lock, loads every counter into ``table``
        and creates ``initial`` at 0 where absent. A file that cannot be used is
        logged in one line and raised as :class:`DatabaseUnusable`, unchanged.
        """
        try:
            opened = await trio.to_thread.run_sync(
                lambda: open_file(
                    self.file,
                    synchronous=self.synchronous,
                    max_counters=table.max_counters,
                    initial=tuple(initial),
                )
            )
        except DatabaseUnusable as error:
            logger.error("%s", error)
            raise
        # Kept at once, no checkpoint in between: cancelled now, it is still closed below.
        self._open = opened
        try:
            table.load(opened.counters)
            self._loaded, self._load_seconds = len(opened.counters), opened.seconds
            opened.counters = {}  # the table has it now
            logger.info(
                "database %s: %d counters loaded in %.2f s (synchronous=%s)",
                self.file,
                self._loaded,
                self._load_seconds,
                self.synchronous,
            )
            yield
        finally:
            with trio.CancelScope(shield=True):
                await self.close()

    async def close(self) -> None:
        """Close the file once the commits already waiting are done; later ones get 503."""
        async with self._turn:
            if self._open is not None:
                opened, self._open = self._open, None
                await trio.to_thread.run_sync(opened.close)

    async def commit(self, rows: Mapping[str, int], *, writes: int, then: Callable[[], T]) -> T:
        """Commit ``rows`` (counter -> new value) as one transaction, then run ``then``.

        ``writes`` is how many requests' writes the rows carry (for the statistics).
        ``then`` runs right after the commit returns, with no checkpoint before it,
        and must not fail: it writes memory to match the file.
        """
        async with self._turn:
            opened = self._open
            if opened is None:
                await trio.lowlevel.checkpoint()
                raise StoreUnavailable(f"the database {self.file} is closed: the server is shutting down")
            try:
                seconds = await trio.to_thread.run_sync(_commit, opened.connection, list(rows.items()))
            except sqlite3.Error as error:
                self._failed += 1
                self._last_failure = str(error)
                raise StoreUnavailable(
                    f"the database {self.file} could not commit ({error}); "
                    "this request changed nothing, try again later"
                ) from None
            # No checkpoint from here to the end of then(): memory follows the file at once.
            self._commits += 1
            self._writes += writes
            self._largest = max(self._largest, writes)
            self._commit_seconds += seconds
            self._max_commit_seconds = max(self._max_commit_seconds, seconds)
            self._last_failure = None
            return then()

    def statistics(self) -> DatabaseStatistics:
        return DatabaseStatistics(
            file=self.file,
            synchronous=self.synchronous,
            open=self._open is not None,
            loaded=self._loaded,
            load_seconds=self._load_seconds,
            commits=self._commits,
            writes=self._writes,
            largest_commit=self._largest,
            commit_seconds=self._commit_seconds,
            max_commit_seconds=self._max_commit_seconds,
            failed_commits=self._failed,
            last_failure=self._last_failure,
            tasks_waiting=self._turn.statistics().tasks_waiting,
        )


def _commit(connection: sqlite3.Connection, rows: list[tuple[str, int]]) -> float:
    """One transaction, in a worker thread; the seconds it took. Rolled back if it fails."""
    started = time.perf_counter()
    if len(rows) <= _ROWS_PER_STATEMENT:
        # No transaction is open (autocommit mode), so this one statement is its own
        # transaction: SQLite commits it, or rolls it back whole, before it returns.
        connection.execute(_UPSERT.format(", ".join(["(?, ?)"] * len(rows))), _flat(rows))
        return time.perf_counter() - started
    try:
        connection.execute("BEGIN IMMEDIATE")
        for first in range(0, len(rows), _ROWS_PER_STATEMENT):
            chunk = rows[first : first + _ROWS_PER_STATEMENT]
            connection.execute(_UPSERT.format(", ".join(["(?, ?)"] * len(chunk))), _flat(chunk))
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            try:
                connection.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite may have rolled it back itself; the error to report is the first
        raise
    return time.perf_counter() - started


def _flat(rows: list[tuple[str, int]]) -> list[str | int]:
    return [item for row in rows for item in row]
