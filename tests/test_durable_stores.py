"""The store suite again, each store on a fresh SQLite file; then what only a durable
store does: group commit, refusals inside a batch, cancellation during a commit, a
full disk, a restart.

Every test here ends by checking that memory equals the file (the ``store``
fixture's teardown), so the shared tests imported from ``test_stores`` check it too.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

# The shared behaviour suite, collected here again with this module's ``store``.
import test_stores as suite
from test_stores import (  # noqa: F401
    test_counter_limit_refuses_new_names_only,
    test_every_operation_checkpoints,
    test_get_and_inc_of_missing_counter_raise_and_create_nothing,
    test_inc_at_int64_max_is_refused_and_leaves_value,
    test_increments_cancelled_at_every_await_are_never_doubled,
    test_initial_counters_exist_at_zero,
    test_int64_min_is_stored_and_incremented,
    test_naive_store_counts_a_set_that_a_racing_inc_overwrote,
    test_naive_store_counts_exactly_what_it_lost,
    test_naive_store_loses_all_but_one_of_simultaneous_increments,
    test_set_then_get_then_inc,
    test_statistics_name_the_strategy,
)
from trio_counters.config import IN_PROCESS_STRATEGIES
from trio_counters.errors import CounterNotFound, CounterOverflow, StoreUnavailable, TooManyCounters
from trio_counters.stores import INT64_MAX, ChannelStore, CounterStore, Database, make_store

SAFE = [s for s in IN_PROCESS_STRATEGIES if s != "naive"]


def file_counts(path: str) -> dict[str, int]:
    """The counters as the file holds them, read by a connection of our own."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        return dict(connection.execute("SELECT name, value FROM counters"))


def memory_counts(store: CounterStore) -> dict[str, int]:
    return dict(store._table._values)  # type: ignore[attr-defined]


@pytest.fixture(params=IN_PROCESS_STRATEGIES)
def strategy(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def database(tmp_path) -> str:  # type: ignore[no-untyped-def]
    return str(tmp_path / "counters.db")


@pytest.fixture
async def store(strategy: str, database: str, nursery: trio.Nursery) -> AsyncIterator[CounterStore]:
    store = make_store(strategy, max_counters=5, initial=("i", "j"), database=database)
    await nursery.start(store.serve)
    yield store
    assert memory_counts(store) == file_counts(database)  # after every test
    store.close()


# The suite's tests for the safe strategies, limited to the in-process ones.


@pytest.mark.parametrize("strategy", SAFE)
async def test_concurrent_increments_are_all_counted(store: CounterStore) -> None:
    await suite.test_concurrent_increments_are_all_counted(store)


@pytest.mark.parametrize("strategy", SAFE)
async def test_safe_strategies_have_no_race_statistics(store: CounterStore) -> None:
    await suite.test_safe_strategies_have_no_race_statistics(store)


# What a database adds.


async def _inc_together(store: CounterStore, n: int, name: str = "i") -> None:
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(store.inc, name)


def _database(store: CounterStore) -> Database:
    return store._database  # type: ignore[attr-defined,no-any-return]


async def test_commits_per_strategy_one_per_write_or_one_per_batch(store: CounterStore, strategy: str) -> None:
    await _inc_together(store, 200)
    stats = store.statistics().database
    assert stats is not None and stats.open and stats.failed_commits == 0 and stats.last_failure is None
    assert stats.writes == 200
    if strategy == "channel":
        # The manager took all 200 waiting commands in one turn: one transaction.
        assert (stats.commits, stats.largest_commit) == (1, 200)
    else:
        assert (stats.commits, stats.largest_commit) == (200, 1)
    assert stats.commit_seconds > 0 and stats.max_commit_seconds <= stats.commit_seconds
    assert stats.loaded == 2 and stats.synchronous == "full" and stats.tasks_waiting == 0
    assert await store.get("i") == (1 if strategy == "naive" else 200)


@pytest.mark.parametrize("strategy", ["naive"])
async def test_naive_store_loses_through_real_commits_and_the_file_agrees(store: CounterStore) -> None:
    await _inc_together(store, 100)
    # 100 commits, each of the value its write then put in memory: all of them 1.
    assert file_counts(_database(store).file)["i"] == 1
    assert store.statistics().race.lost_updates == 99  # type: ignore[union-attr]
    assert store.statistics().database.commits == 100  # type: ignore[union-attr]


@pytest.mark.parametrize("strategy", ["naive"])
async def test_naive_store_racing_creations_stay_within_the_limit(store: CounterStore) -> None:
    outcomes: list[str] = []

    async def create(name: str) -> None:
        try:
            await store.set(name, 1)
            outcomes.append("ok")
        except TooManyCounters:
            outcomes.append("full")

    async with trio.open_nursery() as nursery:
        for k in range(10):  # 3 places left under max_counters=5, 10 racing creations
            nursery.start_soon(create, f"new{k}")
    assert sorted(outcomes) == ["full"] * 7 + ["ok"] * 3
    assert store.statistics().counters == 5  # the teardown checks the file agrees


async def test_channel_batch_refusals_do_not_spoil_the_others(database: str) -> None:
    """Nine commands queued before the manager starts: one turn, one transaction; each
    result computed against the writes staged before it, refusals included."""
    store = ChannelStore(max_counters=5, initial=("i", "j"), buffer_size=20, database=Database(database))
    commands = [
        ("inc i", store.inc, ("i",)),
        ("inc nope", store.inc, ("nope",)),
        ("set big", store.set, ("big", INT64_MAX)),
        ("inc big", store.inc, ("big",)),  # against the staged INT64_MAX
        ("set a", store.set, ("a", 1)),
        ("set b", store.set, ("b", 2)),  # the fifth counter
        ("set c", store.set, ("c", 3)),  # the sixth: refused
        ("get b", store.get, ("b",)),
        ("inc i again", store.inc, ("i",)),
    ]
    answers: dict[str, object] = {}

    async def ask(label: str, operation, *args) -> None:  # type: ignore[no-untyped-def]
        try:
            answers[label] = await operation(*args)
        except Exception as error:
            answers[label] = type(error)

    async with trio.open_nursery() as nursery:
        async with trio.open_nursery() as requests:
            for label, operation, args in commands:  # queued in this order
                requests.start_soon(ask, label, operation, *args)
                await trio.testing.wait_all_tasks_blocked()
            await nursery.start(store.serve)
        stats = store.statistics().database
        store.close()
    assert answers == {
        "inc i": None,
        "inc nope": CounterNotFound,
        "set big": None,
        "inc big": CounterOverflow,
        "set a": None,
        "set b": None,
        "set c": TooManyCounters,
        "get b": 2,  # answered after the commit: a committed value
        "inc i again": None,
    }
    assert stats is not None and (stats.commits, stats.writes, stats.largest_commit) == (1, 5, 5)
    assert memory_counts(store) == file_counts(database) == {"i": 2, "j": 0, "big": INT64_MAX, "a": 1, "b": 2}


@pytest.mark.parametrize("strategy", IN_PROCESS_STRATEGIES)
async def test_cancelled_during_a_commit_at_every_await(store: CounterStore, strategy: str) -> None:
    """Cancel three increments after 0, 1, 2, ... scheduling steps, and once while a
    commit is in its worker thread: nothing doubled, every increment that returned
    counted, and memory equal to the file after every round."""
    database = _database(store)
    landed_during_a_commit = 0
    for steps in [*range(12), "during commit", None]:
        for _ in range(4):
            outcomes: list[str] = []
            scopes = [trio.CancelScope() for _ in range(3)]

            async def inc(scope: trio.CancelScope) -> None:
                with scope:
                    await store.inc("i")
                    outcomes.append("finished")
                    return
                outcomes.append("cancelled")

            async with trio.open_nursery() as nursery:
                for scope in scopes:
                    nursery.start_soon(inc, scope)
                if steps == "during commit":
                    # A commit holds the connection from before it is handed over until
                    # memory is written; once every task is blocked, its holder is
                    # waiting for its worker thread.
                    while not database._turn.locked():
                        await trio.sleep(0)
                    await trio.testing.wait_all_tasks_blocked()
                    landed_during_a_commit += 1
                elif steps is not None:
                    for _ in range(steps):
                        await trio.sleep(0)
                if steps is not None:
                    for scope in scopes:
                        scope.cancel()
            finished, cancelled = outcomes.count("finished"), outcomes.count("cancelled")
            value = await store.get("i")
            assert memory_counts(store) == file_counts(database.file)
            if strategy == "naive":
                assert value <= finished + cancelled
            elif strategy == "lock":
                # Once handed over, a commit finishes and its call returns: it counted.
                assert value == finished
            else:
                assert finished <= value <= finished + cancelled
            if steps == "during commit" and strategy == "channel":
                assert value == 3  # the batch in flight committed; its requesters left
            elif steps == "during commit":
                assert finished >= 1  # the commit in flight finished, and its call returned
            await store.set("i", 0)
    assert landed_during_a_commit == 4
    await store.inc("i")
    assert await store.get("i") == 1


async def _limit_pages(database: Database, pages: int | None) -> None:
    """``PRAGMA max_page_count`` on the store's own connection: the file may not grow
    past ``pages`` (its size now, if 0), or may again (``None``)."""
    async with database._turn:
        connection = database._open.connection  # type: ignore[union-attr]

        def limit() -> None:
            size = connection.execute("PRAGMA page_count").fetchone()[0]
            connection.execute(f"PRAGMA max_page_count={pages or size}" if pages is not None else "PRAGMA max_page_count=1073741823")

        await trio.to_thread.run_sync(limit)


@pytest.mark.parametrize("strategy", IN_PROCESS_STRATEGIES)
async def test_a_full_disk_refuses_writes_changes_nothing_and_recovers(
    strategy: str, database: str, nursery: trio.Nursery
) -> None:
    store = make_store(strategy, max_counters=1000, initial=("i", "j"), database=database)
    await nursery.start(store.serve)
    await store.inc("i")
    await _limit_pages(_database(store), 0)
    name = "x" * 200
    created = 0
    with pytest.raises(StoreUnavailable, match="could not commit .*database or disk is full.*changed nothing"):
        for created in range(100):  # new rows fill the last page, then need another
            await store.set(f"{name}{created}", created)
    refused = f"{name}{created}"
    before = memory_counts(store)
    assert refused not in before and before == file_counts(database)
    with pytest.raises(CounterNotFound):
        await store.get(refused)
    stats = store.statistics().database
    assert stats is not None and stats.failed_commits == 1 and "full" in (stats.last_failure or "")
    await store.inc("i")  # an existing row changes in place: no new page, it commits
    assert await store.get("i") == 2
    await _limit_pages(_database(store), None)  # room again: service resumes by itself
    await store.set(refused, 7)
    assert await store.get(refused) == 7
    assert store.statistics().database.last_failure is None  # type: ignore[union-attr]
    assert memory_counts(store) == file_counts(database)
    store.close()


async def test_a_failed_group_commit_answers_the_whole_batch_503(database: str) -> None:
    store = ChannelStore(max_counters=1000, initial=("i",), buffer_size=10, database=Database(database))
    results: list[str] = []

    async def call(operation, *args) -> None:  # type: ignore[no-untyped-def]
        try:
            await operation(*args)
            results.append("ok")
        except StoreUnavailable:
            results.append("503")

    async with trio.open_nursery() as nursery:
        await nursery.start(store.serve)
        await store.inc("i")
        await _limit_pages(store._database, 0)  # type: ignore[arg-type]
        async with trio.open_nursery() as batch:
            batch.start_soon(call, store.inc, "i")
            for k in range(30):  # enough new rows to need a page the file may not have
                batch.start_soon(call, store.set, "y" * 200 + str(k), k)
            batch.start_soon(call, store.get, "i")
        store.close()
    assert results.count("503") == 32 and store.statistics().database.commits == 1  # type: ignore[union-attr]
    assert memory_counts(store) == file_counts(database) == {"i": 1}


@pytest.mark.parametrize("strategy", IN_PROCESS_STRATEGIES)
async def test_a_restart_loads_every_count_and_resets_none(strategy: str, database: str) -> None:
    for run in range(3):
        store = make_store(strategy, max_counters=10, initial=("i", "j"), database=database)
        async with trio.open_nursery() as nursery:
            await nursery.start(store.serve)
            assert store.statistics().database.loaded == (2 if run == 0 else 3)  # type: ignore[union-attr]
            assert await store.get("i") == run * 3
            for _ in range(3):
                await store.inc("i")
            await store.set(f"run{run}", run) if run == 0 else await store.inc("run0")
            store.close()
    assert file_counts(database) == {"i": 9, "j": 0, "run0": 2}


async def test_a_batch_larger_than_one_statement_is_still_one_transaction(database: str) -> None:
    """1,200 new counters in one turn take several statements: a full disk rolls all of
    them back; with room, they commit together."""
    store = ChannelStore(max_counters=2000, initial=("i",), database=Database(database))
    outcomes: list[str] = []

    async def create(name: str) -> None:
        try:
            await store.set(name, 1)
            outcomes.append("ok")
        except StoreUnavailable:
            outcomes.append("503")

    async with trio.open_nursery() as nursery:
        await nursery.start(store.serve)
        for attempt in ("full", "room"):
            await _limit_pages(store._database, 0 if attempt == "full" else None)  # type: ignore[arg-type]
            async with trio.open_nursery() as batch:
                for k in range(1200):
                    batch.start_soon(create, f"counter-{k}")
            assert memory_counts(store) == file_counts(database)
        stats = store.statistics().database
        store.close()
    assert outcomes == ["503"] * 1200 + ["ok"] * 1200
    assert stats is not None and (stats.commits, stats.failed_commits, stats.largest_commit) == (1, 1, 1200)
    assert len(file_counts(database)) == 1201
