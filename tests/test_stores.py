"""One behaviour suite for every strategy, straight against the store objects.

Stores are driven inside a nursery the way the app drives them: ``serve`` started
with the start protocol, ``close`` at the end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from trio_counters.errors import CounterNotFound, CounterOverflow, StoreUnavailable, TooManyCounters
from trio_counters.stores import INT64_MAX, INT64_MIN, ChannelStore, CounterStore, make_store

from conftest import SAFE_STRATEGIES


@pytest.fixture
async def store(strategy: str, nursery: trio.Nursery) -> AsyncIterator[CounterStore]:
    store = make_store(strategy, max_counters=5, initial=("i", "j"))
    await nursery.start(store.serve)
    yield store
    store.close()


async def test_initial_counters_exist_at_zero(store: CounterStore) -> None:
    assert await store.get("i") == 0
    assert await store.get("j") == 0


async def test_set_then_get_then_inc(store: CounterStore) -> None:
    await store.set("x", 41)
    assert await store.get("x") == 41
    await store.inc("x")
    assert await store.get("x") == 42
    await store.set("x", -7)
    assert await store.get("x") == -7


async def test_get_and_inc_of_missing_counter_raise_and_create_nothing(store: CounterStore) -> None:
    with pytest.raises(CounterNotFound, match="^nope not found$"):
        await store.get("nope")
    with pytest.raises(CounterNotFound):
        await store.inc("nope")
    with pytest.raises(CounterNotFound):
        await store.get("nope")
    assert store.statistics().counters == 2


async def test_inc_at_int64_max_is_refused_and_leaves_value(store: CounterStore) -> None:
    await store.set("big", INT64_MAX - 1)
    await store.inc("big")
    with pytest.raises(CounterOverflow):
        await store.inc("big")
    assert await store.get("big") == INT64_MAX


async def test_int64_min_is_stored_and_incremented(store: CounterStore) -> None:
    await store.set("small", INT64_MIN)
    await store.inc("small")
    assert await store.get("small") == INT64_MIN + 1


async def test_counter_limit_refuses_new_names_only(store: CounterStore) -> None:
    for name in ("a", "b", "c"):
        await store.set(name, 1)
    with pytest.raises(TooManyCounters, match="limit of 5 counters"):
        await store.set("d", 1)
    with pytest.raises(CounterNotFound):
        await store.get("d")
    await store.set("a", 10)  # existing counters keep working
    await store.inc("a")
    assert await store.get("a") == 11
    assert store.statistics().counters == 5


async def test_statistics_name_the_strategy(store: CounterStore, strategy: str) -> None:
    stats = store.statistics()
    assert (stats.strategy, stats.counters, stats.max_counters) == (strategy, 2, 5)


async def test_every_operation_checkpoints(store: CounterStore) -> None:
    # trio's rule for async functions: they always yield, even when they fail.
    await store.set("x", 0)
    with trio.testing.assert_checkpoints():
        await store.get("x")
    with trio.testing.assert_checkpoints():
        await store.set("x", 1)
    with trio.testing.assert_checkpoints():
        await store.inc("x")
    with trio.testing.assert_checkpoints():
        with pytest.raises(CounterNotFound):
            await store.inc("missing")


async def _inc_together(store: CounterStore, n: int) -> None:
    """Start n increments of i in the same scheduling batch and wait for all."""
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(store.inc, "i")


@pytest.mark.parametrize("strategy", SAFE_STRATEGIES)
async def test_concurrent_increments_are_all_counted(store: CounterStore) -> None:
    await _inc_together(store, 1000)
    assert await store.get("i") == 1000


@pytest.mark.parametrize("strategy", ["naive"])
async def test_naive_store_loses_all_but_one_of_simultaneous_increments(store: CounterStore) -> None:
    # Every task reads 0, every task reaches the checkpoint, every task writes 1.
    # Trio only switches at awaits, so this is exact and the same on every run.
    await _inc_together(store, 1000)
    assert await store.get("i") == 1
    # One at a time, nothing is lost: the race needs overlap.
    for _ in range(10):
        await store.inc("i")
    assert await store.get("i") == 11


async def test_increments_cancelled_at_every_await_are_never_doubled(
    store: CounterStore, strategy: str
) -> None:
    """Cancel increments after 0, 1, 2, ... scheduling steps: whichever await the
    cancellation lands on, an increment counts at most once, and every one that
    returned counts exactly once. The store keeps serving afterwards."""
    finished = cancelled = 0
    total_finished = total_cancelled = 0
    for steps in range(8):
        for _ in range(5):  # trio varies the order within a batch; try a few
            async with trio.open_nursery() as nursery:
                scopes = [trio.CancelScope() for _ in range(3)]
                outcomes: list[str] = []

                async def inc(scope: trio.CancelScope) -> None:
                    with scope:
                        await store.inc("i")
                        outcomes.append("finished")
                        return
                    outcomes.append("cancelled")

                for scope in scopes:
                    nursery.start_soon(inc, scope)
                for _ in range(steps):
                    await trio.sleep(0)
                for scope in scopes:
                    scope.cancel()
            finished += outcomes.count("finished")
            cancelled += outcomes.count("cancelled")
            value = await store.get("i")
            if strategy == "naive":
                assert value <= finished + cancelled
            elif strategy == "lock":
                # Cancelled before its write, a lock-guarded increment never happened.
                assert value == finished
            else:
                # The manager may have applied a command whose requester then left.
                assert finished <= value <= finished + cancelled
            total_finished += finished
            total_cancelled += cancelled
            finished = cancelled = 0
            await store.set("i", 0)
    assert total_finished > 0 and total_cancelled > 0  # both outcomes were exercised
    await store.inc("i")  # and the store still answers
    assert await store.get("i") == 1


async def test_channel_store_answers_queued_requests_with_unavailable_when_manager_stops() -> None:
    store = ChannelStore(max_counters=10, initial=("i",), buffer_size=10)
    errors: list[BaseException] = []

    async def inc() -> None:
        try:
            await store.inc("i")
        except StoreUnavailable as error:
            errors.append(error)

    async def cancelled_manager() -> None:
        with trio.CancelScope() as scope:
            scope.cancel()  # cancelled before it takes any command, as at shutdown
            await store.serve()

    with trio.fail_after(5):  # without the manager's drain, the five would hang here
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(inc)
            await trio.testing.wait_all_tasks_blocked()  # all five queued, none answered
            nursery.start_soon(cancelled_manager)
    assert len(errors) == 5
    assert all("manager has stopped" in str(error) for error in errors)


async def test_channel_store_refuses_new_requests_after_close_but_finishes_queued_ones() -> None:
    store = ChannelStore(max_counters=10, initial=("i",), buffer_size=10)
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(store.inc, "i")
        await trio.testing.wait_all_tasks_blocked()
        store.close()  # three commands are already queued
        await nursery.start(store.serve)
        with pytest.raises(StoreUnavailable):
            await store.get("i")
    assert store._table.get("i") == 3


async def test_channel_manager_applies_once_and_skips_a_requester_that_left() -> None:
    store = ChannelStore(max_counters=10, initial=("i",), buffer_size=1)
    async with trio.open_nursery() as nursery:
        requester = trio.CancelScope()
        nursery.start_soon(_inc_in_scope, store, requester)
        await trio.testing.wait_all_tasks_blocked()  # queued, waiting for its reply
        requester.cancel()  # the client has gone away
        await trio.testing.wait_all_tasks_blocked()
        await nursery.start(store.serve)
        # The manager applied the queued command once, found nobody to answer,
        # and went on serving without waiting.
        with trio.fail_after(1):
            assert await store.get("i") == 1
            await store.inc("i")
            assert await store.get("i") == 2
        store.close()


async def _inc_in_scope(store: CounterStore, scope: trio.CancelScope) -> None:
    with scope:
        await store.inc("i")
