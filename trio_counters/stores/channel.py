"""The channel strategy: one manager task owns the table; handlers send it commands.

The seed's third Go server, a manager goroutine reached over channels, built the
trio way. No lock: mutual exclusion comes from the table having one owner.

- The manager is started with the nursery start protocol in the app's nursery
  (``await app.nursery.start(store.serve)``), so it lives exactly as long as the
  app serves and reports ready before the first request.
- Each command carries its own reply channel with room for one message. The
  manager answers with ``send_nowait``: it never waits on a requester, and a
  requester that has gone away (client disconnected, request cancelled) is
  skipped, not waited for.
- The manager applies every command already waiting before it yields, and a
  requester whose command is taken at once waits only for its answer: each
  ``receive()`` and ``send()`` is a checkpoint, and one command per scheduling
  round made the manager the server's bottleneck under load (docs/strategies.md
  has the figures).
- A requester cancelled before its command is taken changes nothing; cancelled
  after, the command is applied once and the answer dropped. Nothing is applied
  twice.
- When the store closes or the manager is cancelled, commands still waiting get
  their reply channels closed, and senders get a closed channel: every caller
  sees :class:`StoreUnavailable` (HTTP 503) rather than hanging.
- If the manager itself fails (a bug, not a refused command: those go back to
  their requester), the failure is logged with its traceback and the manager
  starts over on the same table, which is intact because every command is
  applied without an ``await``. Only the requester whose command was being
  handled gets 503; queued commands are served by the restarted loop.

With a database (the ``database`` setting), the manager does in one turn what a lock
cannot: it takes every command waiting, computes each result against the table plus
the writes staged before it (:class:`PendingWrites`; a refusal -- 404, 409, 507 --
is that command's answer and spoils nothing), commits all the writes as **one**
transaction (group commit), writes them to memory at once, and only then answers
each requester. Commands that arrive during the commit form the next batch. If the
commit fails, nothing of the batch is written anywhere and every command in it gets
503 with the reason. A requester that leaves while its batch commits is skipped, as
above: its command counted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterable
from typing import Any

import outcome
import trio

from ..errors import StoreUnavailable
from .base import ChannelGuardStatistics, CounterTable, PendingWrites, StoreStatistics
from .in_process import InProcessStore
from .sqlite import Database

__all__ = ["ChannelStore"]

logger = logging.getLogger(__name__)

_STOPPED = "the counter manager has stopped"
_FAILED = "the counter manager failed while handling this request; it may or may not have been applied"


#: The table, or a batch's writes staged over it: what a command's operation works on.
_View = CounterTable | PendingWrites


@dataclasses.dataclass(frozen=True)
class _Command:
    #: Called with the view, then ``args``.
    operation: Callable[..., Any]
    args: tuple[Any, ...]
    reply: trio.MemorySendChannel[outcome.Outcome[Any]]


def _answer(command: _Command, result: outcome.Outcome[Any]) -> None:
    try:
        command.reply.send_nowait(result)
    except trio.BrokenResourceError:
        pass  # the requester has gone; its command still counted


class ChannelStore(InProcessStore):
    strategy = "channel"

    def __init__(
        self,
        *,
        max_counters: int,
        initial: Iterable[str] = (),
        buffer_size: int = 0,
        database: Database | None = None,
    ) -> None:
        # Only the manager task touches the table once serving begins.
        super().__init__(max_counters=max_counters, initial=initial, database=database)
        self._commands, self._inbox = trio.open_memory_channel[_Command](buffer_size)
        self._restarts = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The manager: apply commands until the store is closed (with a database:
        open it first, and close it once the manager has left its loop)."""
        async with self._inbox:
            if self._database is None:
                await self._manage(task_status)
            else:
                async with self._database.opened(self._table, self._initial):
                    await self._manage(task_status)

    async def _manage(self, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        try:
            while True:
                try:
                    async for command in self._inbox:
                        if self._database is None:
                            self._apply_waiting(command)
                        else:
                            await self._commit_waiting(command, self._database)
                    return  # closed and drained: serving is over
                except Exception:
                    self._restarts += 1
                    logger.exception(
                        "the counter manager failed; restarting it on the intact table "
                        "(restart %d)",
                        self._restarts,
                    )
        finally:
            # Leaving (closed or cancelled): answer the commands still queued
            # by closing their reply channels, so none of them waits forever.
            while True:
                try:
                    self._inbox.receive_nowait().reply.close()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break

    def _apply_waiting(self, command: _Command) -> None:
        """Apply ``command``, then every command already waiting, in this one turn.

        Each ``receive()`` is a checkpoint, and a checkpoint ends the manager's
        turn: taking one command per ``receive()`` would apply one command per
        scheduling round, however many handlers were waiting, and the manager
        would become the server's bottleneck under load. The commands already
        queued are taken with ``receive_nowait()``, which never yields; the
        turn ends when the queue is empty, so it is bounded by the requests in
        flight.
        """
        while True:
            # Closed on the way out, whatever happens: a requester whose command
            # broke the manager gets 503, not a hang.
            with command.reply:
                self._handle(command)
            try:
                command = self._inbox.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                return

    def _handle(self, command: _Command) -> None:
        # The table's methods never await, so each command is applied whole
        # before the manager looks at the next one. A refusal (or any error of
        # the operation) is captured and goes back to its requester.
        _answer(command, self._apply(command, self._table))

    def _apply(self, command: _Command, view: _View) -> outcome.Outcome[Any]:
        trace = self.tracer
        if trace is not None:
            op = command.operation.__name__.lstrip("_")
            trace("apply", command.args[0], op=op, command=id(command))
        return outcome.capture(command.operation, view, *command.args)

    async def _commit_waiting(self, first: _Command, database: Database) -> None:
        """With a database: ``first`` and every command already waiting, as one batch.

        Each result is computed against the writes staged before it; the writes are
        committed as one transaction, then written to memory, then every command is
        answered. A failed commit answers every command of the batch with its 503.
        """
        batch = [first, *self._take_waiting()]
        with contextlib.ExitStack() as replies:
            for command in batch:  # closed on the way out, whatever happens: 503, not a hang
                replies.enter_context(command.reply)
            staged = PendingWrites(self._table)
            results = [self._apply(command, staged) for command in batch]
            if staged.rows:
                trace = self.tracer
                if trace is not None:
                    first_name = next(iter(staged.rows))
                    database.announce(trace, first_name, writes=staged.writes, rows=len(staged.rows))
                try:
                    await database.commit(staged.rows, writes=staged.writes, then=staged.apply)
                except StoreUnavailable as error:
                    results = [outcome.Error(StoreUnavailable(str(error))) for _ in batch]
                else:
                    if trace is not None:
                        trace("committed", first_name, writes=staged.writes)
            for command, result in zip(batch, results):
                _answer(command, result)

    def _take_waiting(self) -> list[_Command]:
        """Every command already waiting, taken without a checkpoint."""
        waiting = []
        while True:
            try:
                waiting.append(self._inbox.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                return waiting

    def close(self) -> None:
        # The manager drains what is already queued, then its loop ends (and, with a
        # database, the file is closed).
        self._commands.close()

    async def _call(self, operation: Callable[..., Any], *args: Any) -> Any:
        # Cancelled already: raise here, before anything is asked of the manager.
        await trio.lowlevel.checkpoint_if_cancelled()
        reply, answer = trio.open_memory_channel[outcome.Outcome[Any]](1)
        command = _Command(operation, args, reply)
        trace = self.tracer
        if trace is not None:
            trace("send", args[0], op=operation.__name__.lstrip("_"), command=id(command))
        with answer:
            try:
                try:
                    # Taken at once if the manager is waiting (or the buffer has
                    # room), without the yield that send() adds: the wait for the
                    # answer below is this call's checkpoint, so one yield per
                    # call instead of two.
                    self._commands.send_nowait(command)
                except trio.WouldBlock:
                    if trace is not None:
                        trace("send.blocked", args[0], command=id(command))
                    await self._commands.send(command)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise StoreUnavailable(_STOPPED) from None
            try:
                result = await answer.receive()
            except trio.EndOfChannel:
                raise StoreUnavailable(_FAILED if self._inbox_open() else _STOPPED) from None
            if trace is not None:
                trace("reply", args[0], command=id(command))
        return result.unwrap()

    def _inbox_open(self) -> bool:
        return self._commands.statistics().open_receive_channels > 0

    async def get(self, name: str) -> int:
        return await self._call(self._get, name)

    async def set(self, name: str, value: int) -> None:
        await self._call(self._set, name, value)

    async def inc(self, name: str) -> None:
        await self._call(self._inc, name)

    # The operations the manager applies, to the table or to a batch staged over it.

    def _get(self, view: _View, name: str) -> int:
        return view.get(name)

    def _set(self, view: _View, name: str, value: int) -> None:
        view.set(name, value)

    def _inc(self, view: _View, name: str) -> None:
        new_value = view.incremented(name)
        trace = self.tracer
        if trace is not None:
            trace("write", name, new_value, was=view.get(name))
        view.set(name, new_value)

    def statistics(self) -> StoreStatistics:
        channel = self._commands.statistics()
        return self._statistics(
            guard=ChannelGuardStatistics(
                buffer_used=channel.current_buffer_used,
                buffer_size=int(channel.max_buffer_size),
                tasks_waiting_send=channel.tasks_waiting_send,
                tasks_waiting_receive=channel.tasks_waiting_receive,
                manager_running=channel.open_receive_channels > 0,
                manager_restarts=self._restarts,
            ),
        )
