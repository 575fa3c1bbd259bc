"""SharedTimeout: one watchdog task times every store call, to the same deadline a
``move_on_after`` per call would give, and the calls time themselves when it is gone."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from trio_counters.shared_timeout import SharedTimeout


class Slow(Exception):
    pass


async def _wait(event: trio.Event, result: str = "done") -> str:
    await event.wait()
    return result


async def _timed(timeout: SharedTimeout, event: trio.Event, ended: list[tuple[str, float]]) -> None:
    start = trio.current_time()
    try:
        outcome = await timeout.call(_wait, event)
    except Slow:
        outcome = "timed out"
    ended.append((outcome, trio.current_time() - start))


@pytest.mark.parametrize("watched", [True, False], ids=["watchdog", "move_on_after"])
async def test_each_call_ends_at_its_own_deadline_or_with_its_answer(autojump_clock: Any, watched: bool) -> None:
    timeout = SharedTimeout(2.0, Slow)
    ended: list[tuple[str, float]] = []
    released = trio.Event()
    async with trio.open_nursery() as nursery:
        if watched:
            await nursery.start(timeout.watch)
        for offset in (0.0, 0.5, 1.0):  # three calls, begun half a second apart
            nursery.start_soon(_timed, timeout, trio.Event(), ended)
            await trio.sleep(0.5)
        nursery.start_soon(_timed, timeout, released, ended)  # answered in time
        await trio.sleep(1)
        released.set()
        await trio.testing.wait_all_tasks_blocked()
        timeout.close()
    assert sorted(ended, key=lambda e: e[0]) == [("done", 1.0)] + [("timed out", 2.0)] * 3


async def test_calls_finishing_out_of_order_leave_the_queue_empty(autojump_clock: Any) -> None:
    timeout = SharedTimeout(10.0, Slow)
    events = [trio.Event() for _ in range(5)]
    ended: list[tuple[str, float]] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(timeout.watch)
        for event in events:
            nursery.start_soon(_timed, timeout, event, ended)
        await trio.testing.wait_all_tasks_blocked()
        assert len(timeout._calls) == 5
        for index in (3, 1, 4, 0, 2):
            events[index].set()
            await trio.testing.wait_all_tasks_blocked()
        assert len(timeout._calls) == 0
        timeout.close()
    assert [outcome for outcome, _ in ended] == ["done"] * 5


async def test_a_call_still_running_when_the_watchdog_stops_keeps_its_deadline(autojump_clock: Any) -> None:
    timeout = SharedTimeout(3.0, Slow)
    ended: list[tuple[str, float]] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(timeout.watch)
        nursery.start_soon(_timed, timeout, trio.Event(), ended)
        await trio.sleep(1)
        timeout.close()  # the app stops serving; the call goes on
    assert ended == [("timed out", 3.0)]
