"""One behaviour suite for every strategy, straight against the store objects.

Stores are driven inside a nursery the way the app drives them: ``serve`` started
with the start protocol, ``close`` at the end.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from trio_counters.config import SAFE_STRATEGIES, Settings
from trio_counters.errors import CounterNotFound, CounterOverflow, StoreUnavailable, TooManyCounters
from trio_counters.stores import (
    INT64_MAX,
    INT64_MIN,
    ChannelGuardStatistics,
    ChannelStore,
    CounterStore,
    LockGuardStatistics,
    NaiveStore,
    make_store,
)


@pytest.fixture
async def store(strategy: str, nursery: trio.Nursery) -> AsyncIterator[CounterStore]:
    # Settings from the environment, as the app reads them: the redis URL among them.
    store = make_store(
        strategy, max_counters=5, initial=("i", "j"), redis_url=Settings.resolve().redis_url
    )
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
    # None: let them finish. A store that does real I/O (redis) may need more than
    # eight scheduling steps for any increment to finish before its cancellation.
    for steps in [*range(8), None]:
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
                if steps is not None:
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


class _StepCounter(trio.abc.Instrument):
    """Counts the scheduling steps of one task."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1


async def test_channel_manager_applies_every_waiting_command_in_one_turn() -> None:
    """Under load the manager must not take one command per scheduling round (each
    receive() is a checkpoint): it applies all the commands already waiting before
    it yields, so 200 queued increments cost it a step or two, not 200."""
    store = ChannelStore(max_counters=10, initial=("i",))  # rendezvous: senders wait on it
    async with trio.open_nursery() as nursery:
        for _ in range(200):
            nursery.start_soon(store.inc, "i")
        await trio.testing.wait_all_tasks_blocked()  # 200 senders waiting, no manager yet
        manager = await nursery.start(_serve_reporting_task, store)
        steps = _StepCounter(manager)
        trio.lowlevel.add_instrument(steps)
        try:
            await trio.testing.wait_all_tasks_blocked()  # all answered, manager idle
        finally:
            trio.lowlevel.remove_instrument(steps)
        assert store._table.get("i") == 200
        assert steps.steps <= 3
        store.close()


async def _serve_reporting_task(
    store: ChannelStore, *, task_status: trio.TaskStatus[trio.lowlevel.Task]
) -> None:
    task_status.started(trio.lowlevel.current_task())
    await store.serve()


async def _inc_in_scope(store: CounterStore, scope: trio.CancelScope) -> None:
    with scope:
        await store.inc("i")


@pytest.mark.parametrize("strategy", ["naive"])
async def test_naive_store_counts_exactly_what_it_lost(store: CounterStore) -> None:
    await _inc_together(store, 100)  # 100 acknowledged, the value moved by 1
    stats = store.statistics()
    assert stats.guard is None  # nothing guards the naive store
    race = stats.race
    assert race is not None and race.lost_updates == 99 and race.worst == (("i", 99),)
    await _inc_together(store, 10)  # 10 more, moved by 1 again
    assert store.statistics().race.lost_updates == 99 + 9
    for _ in range(5):  # one at a time: no overlap, no loss
        await store.inc("j")
    assert store.statistics().race.lost_updates == 108
    await store.set("i", 0)  # the count is "since the counter was last set"
    assert store.statistics().race.lost_updates == 0


@pytest.mark.parametrize("strategy", ["naive"])
async def test_naive_store_counts_a_set_that_a_racing_inc_overwrote(store: CounterStore) -> None:
    # The increment reads 5; the set and the increment then both write in the
    # next batch, in an order trio varies on purpose. When the increment writes
    # last, the set is lost and counted; when the set writes last, nothing is lost.
    seen = set()
    for _ in range(40):
        await store.set("i", 5)
        before = store.statistics().race.overwritten_sets
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.inc, "i")
            nursery.start_soon(store.set, "i", 100)
        value = await store.get("i")
        overwritten = store.statistics().race.overwritten_sets - before
        assert (value, overwritten) in {(6, 1), (100, 0)}
        assert store.statistics().race.lost_updates == 0
        seen.add(value)
    assert seen == {6, 100}


@pytest.mark.parametrize("strategy", SAFE_STRATEGIES)
async def test_safe_strategies_have_no_race_statistics(store: CounterStore) -> None:
    await _inc_together(store, 100)
    assert store.statistics().race is None


@pytest.mark.parametrize("strategy", ["lock"])
async def test_lock_statistics_show_the_lock_and_its_queue(store: CounterStore) -> None:
    assert store.statistics().guard == LockGuardStatistics(locked=False, tasks_waiting=0)
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(store.inc, "i")
        await trio.sleep(0)
        await trio.sleep(0)  # the first holds the lock at its checkpoint, two wait
        assert store.statistics().guard == LockGuardStatistics(locked=True, tasks_waiting=2)


async def test_channel_statistics_show_the_command_channel() -> None:
    store = ChannelStore(max_counters=10, initial=("i",), buffer_size=4)
    async with trio.open_nursery() as nursery:
        for _ in range(6):
            nursery.start_soon(store.inc, "i")
        await trio.testing.wait_all_tasks_blocked()  # no manager yet: 4 queued, 2 blocked
        assert store.statistics().guard == ChannelGuardStatistics(
            buffer_used=4,
            buffer_size=4,
            tasks_waiting_send=2,
            tasks_waiting_receive=0,
            manager_running=True,
            manager_restarts=0,
        )
        await nursery.start(store.serve)
        await trio.testing.wait_all_tasks_blocked()
        assert store.statistics().guard == ChannelGuardStatistics(
            buffer_used=0,
            buffer_size=4,
            tasks_waiting_send=0,
            tasks_waiting_receive=1,  # the idle manager
            manager_running=True,
            manager_restarts=0,
        )
        store.close()
    assert await _value(store) == 6
    assert store.statistics().guard == ChannelGuardStatistics(
        buffer_used=0,
        buffer_size=4,
        tasks_waiting_send=0,
        tasks_waiting_receive=0,
        manager_running=False,
        manager_restarts=0,
    )


async def _value(store: ChannelStore) -> int:
    return store._table.get("i")


async def test_a_failing_manager_is_logged_restarted_and_keeps_the_table(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = ChannelStore(max_counters=10, initial=("i",), buffer_size=10)
    handle = store._handle
    failures = iter([RuntimeError("injected manager failure")])

    def fail_once(command):  # type: ignore[no-untyped-def]
        error = next(failures, None)
        if error is not None:
            raise error
        handle(command)

    store._handle = fail_once  # type: ignore[method-assign]
    results: list[str] = []

    async def inc() -> None:
        try:
            await store.inc("i")
            results.append("ok")
        except StoreUnavailable as error:
            results.append(str(error))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(store.serve)
            for _ in range(5):
                nursery.start_soon(inc)
            await trio.testing.wait_all_tasks_blocked()
            store.close()
    # The command the manager broke on got 503 (it was not applied); the other
    # four queued behind it were served by the restarted manager.
    assert sorted(results) == sorted(["ok"] * 4 + [
        "the counter manager failed while handling this request; it may or may not have been applied"
    ])
    assert store._table.get("i") == 4
    assert store.statistics().guard == ChannelGuardStatistics(
        buffer_used=0,
        buffer_size=10,
        tasks_waiting_send=0,
        tasks_waiting_receive=0,
        manager_running=False,
        manager_restarts=1,
    )
    [record] = [r for r in caplog.records if "manager failed" in r.getMessage()]
    assert record.levelname == "ERROR" and "injected manager failure" in record.exc_text


@pytest.mark.parametrize("seed", range(5))
async def test_naive_race_report_stays_exact_when_increments_arrive_in_waves(seed: int) -> None:
    """Increments that start at different moments read different values, so a later
    write can move the value *down* (it read earlier) and the next one puts an
    increment back. lost_updates must stay acknowledged minus how far the value moved."""
    rng = random.Random(seed)
    store = NaiveStore(max_counters=10, initial=("i",))
    acknowledged = 0

    async def inc() -> None:
        nonlocal acknowledged
        await store.inc("i")
        acknowledged += 1

    async with trio.open_nursery() as nursery:
        for _ in range(400):
            nursery.start_soon(inc)
            for _ in range(rng.choice((0, 0, 1, 2))):
                await trio.lowlevel.checkpoint()
    final = await store.get("i")
    assert acknowledged == 400
    assert store.statistics().race.lost_updates == acknowledged - final
