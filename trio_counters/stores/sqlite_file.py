"""Opening the counters' SQLite file: every check before the first write, then the load.

:func:`open_file` runs in a worker thread (it blocks) and either returns an
:class:`OpenFile` -- the connection, the OS lock that makes this process the file's
only user, and every counter in it -- or raises :class:`DatabaseUnusable` with one
line saying what is wrong. The order is what keeps a refused file untouched:

1. the path: not a directory, in a folder that exists and that this process may
   write in (SQLite keeps ``FILE-wal`` and ``FILE-shm`` beside the file);
2. the lock: ``fcntl.flock`` on the file itself, held until :meth:`OpenFile.close`.
   A second server, or a second hypercorn worker (``-w 2``), is refused here before
   SQLite reads a byte. (``flock`` locks are separate from the POSIX locks SQLite
   takes, and the descriptor stays open as long as the connection does: closing
   another descriptor of the file would drop SQLite's own locks.)
3. the content, read only: an SQLite file, either empty or one of ours
   (:data:`APPLICATION_ID`, :data:`SCHEMA_VERSION`, exactly :data:`SCHEMA`), with
   no more counters than ``max_counters``;
4. only then the writes: WAL mode, the table if the file is new, ``i`` and ``j``
   at 0 where absent -- one transaction.

More counters in the file than ``max_counters`` is refused, not served in part:
``max_counters`` bounds the server's memory, so loading them all would break that
bound, and loading some would answer 404 for counters the file holds.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Iterable
from urllib.parse import quote

__all__ = [
    "APPLICATION_ID",
    "SCHEMA",
    "SCHEMA_VERSION",
    "SYNCHRONOUS_MODES",
    "BUSY_TIMEOUT",
    "DatabaseUnusable",
    "OpenFile",
    "open_file",
]

logger = logging.getLogger(__name__)

#: The one table. STRICT: SQLite itself refuses a value that is not an integer
#: (its INTEGER is the API's signed 64-bit range); WITHOUT ROWID: the name is the key.
SCHEMA = (
    "CREATE TABLE counters (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) "
    "STRICT, WITHOUT ROWID"
)
#: ``PRAGMA application_id`` of a trio_counters file ("trct"): how a file says it is ours.
APPLICATION_ID = 0x74726374
#: ``PRAGMA user_version``: the shape of the file; a newer one is refused.
SCHEMA_VERSION = 1
#: ``database_sync`` to ``PRAGMA synchronous``.
SYNCHRONOUS_MODES = {"full": "FULL", "normal": "NORMAL"}
#: Seconds SQLite waits for a write lock that someone else (an ``sqlite3`` shell
#: beside the server, say) holds, before the commit fails with "database is locked".
BUSY_TIMEOUT = 2.0


class DatabaseUnusable(Exception):
    """The file cannot be used; the message is one line, naming the file and why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot use the database {path}: {reason}")
        self.path = path
        self.reason = reason


@dataclasses.dataclass
class OpenFile:
    """A checked, locked, loaded counters file."""

    path: str
    connection: sqlite3.Connection
    #: The descriptor holding the ``flock``: this process's claim on the file.
    lock_fd: int
    #: Every counter in the file, after ``i`` and ``j`` were added where absent.
    counters: dict[str, int]
    #: Seconds the whole opening took: checks, load and the first write.
    seconds: float

    def close(self) -> None:
        """Close the connection (SQLite checkpoints the WAL and removes it), then let go of the file."""
        try:
            self.connection.close()
        finally:
            os.close(self.lock_fd)


def open_file(path: str, *, synchronous: str, max_counters: int, initial: Iterable[str]) -> OpenFile:
    """Check, lock and load the file at ``path`` (absolute); blocks: call it in a thread."""
    started = time.perf_counter()
    _check_path(path)
    fd = _lock(path)
    connection = None
    try:
        connection = _connect(path)
        counters, new = _check_and_load(path, connection, max_counters)
        try:
            _prepare(path, connection, synchronous, new=new)
            _seed(connection, counters, initial, max_counters, path)
        except sqlite3.Error as error:  # the disk is full, say: SQLite rolled it back
            raise DatabaseUnusable(path, f"cannot write to it ({error})") from None
    except BaseException:
        if connection is not None:
            connection.close()
        os.close(fd)
        raise
    return OpenFile(path, connection, fd, counters, time.perf_counter() - started)


def _check_path(path: str) -> None:
    folder = os.path.dirname(path)
    if os.path.isdir(path):
        raise DatabaseUnusable(path, "it is a directory; the database setting names a file (created if absent)")
    if not os.path.isdir(folder):
        raise DatabaseUnusable(path, f"the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DatabaseUnusable(
            path,
            f"this process may not write in the folder {folder}, where SQLite keeps the file "
            "and its -wal and -shm companions",
        )


def _lock(path: str) -> int:
    """Open (creating if absent, writing nothing) and ``flock`` the file; the descriptor."""
    existed = os.path.exists(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as error:
        doing = "open it for writing" if existed else "create it"
        raise DatabaseUnusable(path, f"cannot {doing} ({error.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DatabaseUnusable(
            path,
            "another process is using it (a second server, or a second hypercorn worker "
            "with -w 2): one process owns a database file; for more than one process, "
            "use the redis store (docs/redis.md)",
        ) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _connect(path: str) -> sqlite3.Connection:
    # mode=rw: never create (the file exists: _lock made sure). isolation_level=None:
    # autocommit, so a statement outside BEGIN ... COMMIT is a transaction of its own,
    # and Python's sqlite3 never opens one behind our back.
    # check_same_thread=False: the connection is used from trio's worker threads, one
    # call at a time (the store's commits are serialised by Database).
    try:
        return sqlite3.connect(
            f"file:{quote(path)}?mode=rw",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
            timeout=BUSY_TIMEOUT,
        )
    except sqlite3.Error as error:
        raise DatabaseUnusable(path, f"SQLite cannot open it ({error})") from None


def _check_and_load(
    path: str, connection: sqlite3.Connection, max_counters: int
) -> tuple[dict[str, int], bool]:
    """Read-only checks of the content, then every counter, and whether the file is
    new (empty); nothing is written here."""
    unchanged = "; the file is unchanged"
    try:
        application_id = connection.execute("PRAGMA application_id").fetchone()[0]
        objects = connection.execute("SELECT type, name, sql FROM sqlite_schema").fetchall()
    except sqlite3.DatabaseError as error:
        raise DatabaseUnusable(path, f"it is not an SQLite database ({error}){unchanged}") from None
    if not objects:
        return {}, True
    if application_id != APPLICATION_ID:
        names = ", ".join(sorted(name for _, name, _ in objects))
        raise DatabaseUnusable(
            path,
            f"it is an SQLite database of something else (it holds {names}); trio_counters "
            f"keeps its counts in a file of its own{unchanged}",
        )
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version != SCHEMA_VERSION:
        raise DatabaseUnusable(
            path, f"its schema version is {version}; this trio_counters reads version {SCHEMA_VERSION}{unchanged}"
        )
    if objects != [("table", "counters", SCHEMA)]:
        shown = "; ".join(sql or f"{kind} {name}" for kind, name, sql in objects)
        raise DatabaseUnusable(
            path, f"its tables have another shape: expected only {SCHEMA!r}, found {shown!r}{unchanged}"
        )
    count = connection.execute("SELECT count(*) FROM counters").fetchone()[0]
    if count > max_counters:
        raise DatabaseUnusable(
            path,
            f"it holds {count} counters, more than max_counters ({max_counters}); raise "
            f"TRIO_COUNTERS_MAX_COUNTERS to at least {count} to serve them{unchanged}",
        )
    return dict(connection.execute("SELECT name, value FROM counters")), False


def _prepare(path: str, connection: sqlite3.Connection, synchronous: str, *, new: bool) -> None:
    """WAL mode, the durability asked for, and the table in a new file."""
    try:
        mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    except sqlite3.Error as error:
        raise DatabaseUnusable(path, f"cannot switch it to WAL mode ({error})") from None
    if mode.lower() != "wal":
        raise DatabaseUnusable(path, f"SQLite kept it in journal mode {mode!r}, not WAL")
    connection.execute(f"PRAGMA synchronous={SYNCHRONOUS_MODES[synchronous]}")
    if new:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(SCHEMA)
        connection.execute(f"PRAGMA application_id={APPLICATION_ID}")
        connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        connection.execute("COMMIT")


def _seed(
    connection: sqlite3.Connection, counters: dict[str, int], initial: Iterable[str], max_counters: int, path: str
) -> None:
    """``i`` and ``j`` at 0 where absent, within the limit: a restart never resets a count."""
    missing = [name for name in dict.fromkeys(initial) if name not in counters]
    room = max(0, max_counters - len(counters))
    seeded, left_out = missing[:room], missing[room:]
    if seeded:
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany("INSERT INTO counters (name, value) VALUES (?, 0)", [(n,) for n in seeded])
        connection.execute("COMMIT")
        counters.update(dict.fromkeys(seeded, 0))
    if left_out:
        logger.warning(
            "the database %s holds max_counters (%d) counters: %s not created",
            path,
            max_counters,
            ", ".join(left_out),
        )
