"""One timeout shared by many calls, kept by one task instead of a trio deadline per call.

``with trio.move_on_after(t)`` around every store call gives trio's run loop a
deadline per request to file, and a stale entry to sweep out of its heap later.
The store calls all wait the same ``seconds``, so their deadlines fall in the
order the calls began: :class:`SharedTimeout` keeps the calls in flight in a
queue, in that order, and one watchdog task sleeps until the first one's deadline
and cancels it if it is still running. A call costs a cancel scope with no
deadline and an entry in the queue, removed as soon as it and the calls before
it have finished; the watchdog wakes about once per ``seconds`` under load.

While the watchdog is not running (before the app serves, after it stops), a
call falls back to ``trio.move_on_after``: the timeout holds either way.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

__all__ = ["SharedTimeout"]

T = TypeVar("T")


class _Call:
    """A call in flight: when it must end, the scope that ends it, whether it has."""

    __slots__ = ("deadline", "scope", "done")

    def __init__(self, deadline: float, scope: trio.CancelScope) -> None:
        self.deadline = deadline
        self.scope = scope
        self.done = False


class SharedTimeout:
    """Calls that each wait at most ``seconds``, timed by one task (:meth:`watch`); a
    call that takes longer is cancelled and raises what ``timed_out()`` returns."""

    def __init__(self, seconds: float, timed_out: Callable[[], BaseException] = trio.TooSlowError) -> None:
        self.seconds = seconds
        self.timed_out = timed_out
        self._calls: deque[_Call] = deque()
        self._watching = False
        self._stop = trio.CancelScope()

    async def call(self, function: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``await function(*args)``; once ``seconds`` have passed without its answer, the
        call is cancelled and ``timed_out()`` raised."""
        if not self._watching:
            with trio.move_on_after(self.seconds):
                return await function(*args)
            raise self.timed_out()
        with trio.CancelScope() as scope:
            call = _Call(trio.current_time() + self.seconds, scope)
            calls = self._calls
            calls.append(call)
            try:
                return await function(*args)
            finally:
                call.done = True
                while calls and calls[0].done:
                    calls.popleft()
        raise self.timed_out()

    async def watch(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The watchdog: cancel each call still running at its deadline, until
        :meth:`close` (or a cancellation) ends it."""
        calls = self._calls
        self._stop = trio.CancelScope()
        self._watching = True
        try:
            task_status.started()
            with self._stop:
                await self._watch(calls)
        finally:
            self._watching = False
            for call in calls:  # nobody watches them any more: each keeps its own deadline
                if not call.done:
                    call.scope.deadline = call.deadline
            calls.clear()

    def close(self) -> None:
        """End :meth:`watch`; calls from now on time themselves."""
        self._stop.cancel()

    async def _watch(self, calls: deque[_Call]) -> None:
        while True:
            while calls and calls[0].done:  # finished after a later one
                calls.popleft()
            if not calls:
                # A call that begins from now on ends no sooner than this.
                await trio.sleep(self.seconds)
            elif calls[0].deadline <= trio.current_time():
                calls.popleft().scope.cancel()
            else:
                await trio.sleep_until(calls[0].deadline)
