"""Every file the server must refuse at start, in the store and through the real server:
one clear line, no serving, and the file exactly as it was. Then the settings.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
import trio

from trio_counters.config import ConfigError, Settings
from trio_counters.stores import DatabaseUnusable, make_store
from trio_counters.stores.sqlite_file import APPLICATION_ID, SCHEMA, SCHEMA_VERSION
from trio_counters.testing import ServerError, run_server

HANG = 60


def ours(path: Path, counters: int = 2, *, schema: str = SCHEMA, version: int = SCHEMA_VERSION) -> None:
    """A trio_counters file written by hand (rollback-journal mode, as SQLite starts)."""
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute(schema)
        connection.execute(f"PRAGMA application_id={APPLICATION_ID}")
        connection.execute(f"PRAGMA user_version={version}")
        connection.executemany(
            "INSERT INTO counters VALUES (?, ?)", [(f"c{k}", k) for k in range(counters)]
        )
        connection.commit()


@contextlib.contextmanager
def unwritable(folder: Path) -> Iterator[None]:
    """No file may be created in ``folder``: immutable for root (who ignores modes)."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(folder)], check=True)
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        folder.chmod(0o500)
        try:
            yield
        finally:
            folder.chmod(0o700)


@contextlib.contextmanager
def held_by_another(path: Path) -> Iterator[None]:
    """Another owner's lock on the file, as a second server would find it."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _directory(path: Path) -> contextlib.AbstractContextManager[None]:
    path.mkdir()
    return contextlib.nullcontext()


def _not_sqlite(path: Path) -> contextlib.AbstractContextManager[None]:
    path.write_text("name,value\ni,3\n" * 50)
    return contextlib.nullcontext()


def _someone_elses(path: Path) -> contextlib.AbstractContextManager[None]:
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
        connection.commit()
    return contextlib.nullcontext()


def _wrong_shape(path: Path) -> contextlib.AbstractContextManager[None]:
    ours(path, schema="CREATE TABLE counters (name TEXT, value TEXT)")
    return contextlib.nullcontext()


def _newer(path: Path) -> contextlib.AbstractContextManager[None]:
    ours(path, version=SCHEMA_VERSION + 1)
    return contextlib.nullcontext()


def _too_many(path: Path) -> contextlib.AbstractContextManager[None]:
    ours(path, counters=6)  # max_counters is 5 here
    return contextlib.nullcontext()


def _in_use(path: Path) -> contextlib.AbstractContextManager[None]:
    ours(path)
    return held_by_another(path)


def _unwritable_folder_new_file(path: Path) -> contextlib.AbstractContextManager[None]:
    path.parent.mkdir()
    return unwritable(path.parent)


def _unwritable_folder_existing_file(path: Path) -> contextlib.AbstractContextManager[None]:
    path.parent.mkdir()
    ours(path)
    return unwritable(path.parent)


def _missing_folder(path: Path) -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


#: (id, where the file goes under tmp_path, how to make it bad, what the line says)
BAD_FILES: list[tuple[str, str, Callable[[Path], contextlib.AbstractContextManager[None]], str]] = [
    ("directory", "counters.db", _directory, "it is a directory"),
    ("missing-folder", "nowhere/counters.db", _missing_folder, "the folder .*nowhere does not exist"),
    ("unwritable-folder", "locked/counters.db", _unwritable_folder_new_file, "this process may not write in the folder"),
    ("unwritable-folder-existing-file", "locked/counters.db", _unwritable_folder_existing_file, "this process may not write in the folder"),
    ("not-sqlite", "counters.db", _not_sqlite, r"it is not an SQLite database \(file is not a database\)"),
    ("another-applications-sqlite", "counters.db", _someone_elses, r"it is an SQLite database of something else \(it holds users\)"),
    ("wrong-table-shape", "counters.db", _wrong_shape, "its tables have another shape"),
    ("newer-schema", "counters.db", _newer, "its schema version is 2; this trio_counters reads version 1"),
    ("more-counters-than-max", "counters.db", _too_many, r"it holds 6 counters, more than max_counters \(5\); raise TRIO_COUNTERS_MAX_COUNTERS"),
    ("in-use", "counters.db", _in_use, "another process is using it .*-w 2.*use the redis store"),
]
IDS = [case[0] for case in BAD_FILES]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` and a hash of its bytes."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.mark.parametrize(("case", "where", "make", "says"), BAD_FILES, ids=IDS)
@pytest.mark.parametrize("strategy", ["naive", "lock", "channel"])
async def test_a_bad_file_is_refused_by_the_store_and_left_as_it_was(
    tmp_path: Path, strategy: str, case: str, where: str, make, says: str, caplog: pytest.LogCaptureFixture  # type: ignore[no-untyped-def]
) -> None:
    path = tmp_path / where
    with make(path):
        before = snapshot(tmp_path)
        store = make_store(strategy, max_counters=5, initial=("i", "j"), database=str(path))
        with pytest.raises(DatabaseUnusable, match=f"^cannot use the database {path}: {says}"):
            await store.serve()  # refused before it reports ready
        assert snapshot(tmp_path) == before
    [record] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert record.getMessage().startswith(f"cannot use the database {path}: ")
    assert "\n" not in record.getMessage()
    assert not store.statistics().database.open  # type: ignore[union-attr]


async def _refused(nursery: trio.Nursery, env: dict[str, str], *args: str) -> tuple[int, str]:
    """Start the real server expecting it not to serve: its exit code and its log."""
    try:
        server = await nursery.start(partial(run_server, env=env, args=args))
    except ServerError as error:  # exited before hypercorn printed its address
        return error.returncode or 0, "\n".join(error.log_tail)
    # hypercorn prints "Running on" before it notices the failed start, then exits
    # without serving a request.
    return await server.wait(HANG), server.log


@pytest.mark.parametrize(("case", "where", "make", "says"), BAD_FILES, ids=IDS)
async def test_the_server_refuses_a_bad_file_in_one_line_and_exits(
    tmp_path: Path, nursery: trio.Nursery, case: str, where: str, make, says: str  # type: ignore[no-untyped-def]
) -> None:
    path = tmp_path / where
    with make(path):
        before = snapshot(tmp_path)
        env = {"TRIO_COUNTERS_DATABASE": str(path), "TRIO_COUNTERS_MAX_COUNTERS": "5"}
        with trio.fail_after(HANG):
            code, log = await _refused(nursery, env)
        assert snapshot(tmp_path) == before
    assert code != 0, log
    lines = [line for line in log.splitlines() if "ERROR in sqlite: cannot use the database" in line]
    assert len(lines) == 1, log
    assert lines[0].split("ERROR in sqlite: ", 1)[1].startswith(f"cannot use the database {path}: ")
    assert re.search(says, lines[0]), lines[0]
    # And no traceback repeats it: one more line says the process is ending.
    assert "Traceback" not in log, log
    assert "the app did not start (the reason is above); exiting" in log, log


def test_settings_database_and_its_sync_mode() -> None:
    settings = Settings.resolve({"TRIO_COUNTERS_DATABASE": "counts.db", "TRIO_COUNTERS_STORE": "channel"})
    assert (settings.database, settings.database_sync) == ("counts.db", "full")
    assert Settings.resolve({}).database is None  # unset: memory only, as before
    assert Settings.resolve({"TRIO_COUNTERS_DATABASE": "  "}).database is None
    assert Settings(database="x.db", database_sync="normal").database_sync == "normal"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"TRIO_COUNTERS_DATABASE": "x.db", "TRIO_COUNTERS_STORE": "redis"},
            "TRIO_COUNTERS_DATABASE (database) is a file for the naive, lock and channel stores, "
            "which keep their counts in one process; the redis store (TRIO_COUNTERS_STORE (store)) "
            "keeps its counts in Redis: use one or the other",
        ),
        (
            {"TRIO_COUNTERS_DATABASE_SYNC": "FULL"},
            "TRIO_COUNTERS_DATABASE_SYNC (database_sync) must be one of full, normal, got 'FULL'",
        ),
        (
            {"TRIO_COUNTERS_DATABASE": ":memory:"},
            "TRIO_COUNTERS_DATABASE (database) names a file; to keep the counts in memory only, leave it unset",
        ),
    ],
)
def test_settings_refuse_what_cannot_work(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.resolve(environ)
    assert str(refused.value) == message
    with pytest.raises(ConfigError, match="^database must be the path of a file, got 3 \\(an int\\)$"):
        Settings(database=3)  # type: ignore[arg-type]
