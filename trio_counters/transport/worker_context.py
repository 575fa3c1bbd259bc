"""The end of a worker's graceful shutdown, for the writes that would otherwise outlive it.

hypercorn shields every socket write from cancellation, so that a response is
never cut in the middle; but a client that stops reading then holds its write,
and with it the whole worker, past ``--graceful-timeout`` (for ever: the shield
ignores the deadline hypercorn puts on its connections when shutdown begins).
:class:`ShutdownDeadline` gives such writes a shield that holds until that same
deadline and no longer; and from that deadline on, while the requests still open
are cancelled and unwind, it keeps the objects alive then out of the cyclic
garbage collector's way (``gc.freeze``). Why and how: docs/transport.md.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from math import inf
from typing import Any

import trio

__all__ = ["ShutdownDeadline", "shutdown_shield"]


class ShutdownDeadline:
    """When one worker's graceful shutdown must be over: ``inf`` until it begins.

    hypercorn's ``worker_serve`` sets ``context.terminated`` as shutdown begins and
    gives its connections ``graceful_timeout`` seconds from then; one task per worker
    (a trio system task: it belongs to no connection) waits for that and moves the
    deadline of every write shielded by :meth:`shield` to the same moment.
    """

    _of: weakref.WeakKeyDictionary[Any, ShutdownDeadline] = weakref.WeakKeyDictionary()

    def __init__(self, graceful_timeout: float) -> None:
        self.graceful_timeout = graceful_timeout
        #: ``inf`` until shutdown begins, then when it must be over.
        self.deadline = inf
        self._scopes: set[trio.CancelScope] = set()

    @classmethod
    def of(cls, context: Any, config: Any) -> ShutdownDeadline:
        """The one for hypercorn's worker ``context``, watching it from the first call on."""
        deadline = cls._of.get(context)
        if deadline is None:
            deadline = cls._of[context] = cls(config.graceful_timeout)
            trio.lowlevel.spawn_system_task(
                deadline._watch, context.terminated, name="trio_counters shutdown deadline"
            )
        return deadline

    async def _watch(self, terminated: Any) -> None:
        await terminated.wait()
        self.deadline = trio.current_time() + self.graceful_timeout
        for scope in self._scopes:
            scope.deadline = min(scope.deadline, self.deadline)
        await trio.sleep_until(self.deadline)
        # Every request still open is now cancelled, and the worker exits once they
        # have unwound. Unwinding allocates (a Cancelled and its traceback per
        # task, each await), and full collections walk every live task and frame:
        # with 1,000 requests held open by their clients, 0.6 s of the 1.5 s the
        # worker took past the deadline. Frozen, the objects alive now are left out
        # of every collection until the worker's trio.run ends (system tasks are
        # cancelled then), when they are handed back, for whatever runs after.
        gc.freeze()
        try:
            await trio.sleep_forever()
        finally:
            gc.unfreeze()

    def enter(self) -> None:
        """Make this the deadline :func:`shutdown_shield` uses in the calling task, and in
        the tasks it starts from now on (a connection's, for its app tasks)."""
        _current.set(self)

    @contextmanager
    def shield(self) -> Iterator[trio.CancelScope]:
        """A cancel scope shielded from every cancellation until the graceful deadline.

        Its ``cancelled_caught`` says whether the deadline cut what ran inside it.
        """
        with trio.CancelScope(shield=True, deadline=self.deadline) as scope:
            self._scopes.add(scope)
            try:
                yield scope
            finally:
                self._scopes.discard(scope)


_current: ContextVar[ShutdownDeadline | None] = ContextVar("trio_counters_shutdown_deadline", default=None)


@contextmanager
def shutdown_shield() -> Iterator[trio.CancelScope]:
    """:meth:`ShutdownDeadline.shield` of the connection this task serves; outside one, a
    plain shield."""
    deadline = _current.get()
    if deadline is None:
        with trio.CancelScope(shield=True) as scope:
            yield scope
    else:
        with deadline.shield() as scope:
            yield scope
