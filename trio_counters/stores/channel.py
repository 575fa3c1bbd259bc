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
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from typing import Any

import outcome
import trio

from ..errors import StoreUnavailable
from .base import ChannelGuardStatistics, CounterStore, CounterTable, StoreStatistics

__all__ = ["ChannelStore"]

logger = logging.getLogger(__name__)

_STOPPED = "the counter manager has stopped"
_FAILED = "the counter manager failed while handling this request; it may or may not have been applied"


@dataclasses.dataclass(frozen=True)
class _Command:
    operation: Callable[..., Any]
    args: tuple[Any, ...]
    reply: trio.MemorySendChannel[outcome.Outcome[Any]]


class ChannelStore(CounterStore):
    strategy = "channel"

    def __init__(
        self, *, max_counters: int, initial: Iterable[str] = (), buffer_size: int = 0
    ) -> None:
        # Only the manager task touches the table once serving begins.
        self._table = CounterTable(max_counters=max_counters, initial=initial)
        self._commands, self._inbox = trio.open_memory_channel[_Command](buffer_size)
        self._restarts = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The manager: apply commands one at a time until the store is closed."""
        async with self._inbox:
            task_status.started()
            try:
                while True:
                    try:
                        async for command in self._inbox:
                            self._apply_waiting(command)
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
        trace = self.tracer
        if trace is not None:
            op = command.operation.__name__.lstrip("_")
            trace("apply", command.args[0], op=op, command=id(command))
        result = outcome.capture(command.operation, *command.args)
        try:
            command.reply.send_nowait(result)
        except trio.BrokenResourceError:
            pass  # the requester has gone; its command still counted

    def close(self) -> None:
        # The manager drains what is already queued, then its loop ends.
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
        return await self._call(self._table.get, name)

    async def set(self, name: str, value: int) -> None:
        await self._call(self._table.set, name, value)

    async def inc(self, name: str) -> None:
        await self._call(self._inc, name)

    def _inc(self, name: str) -> None:
        new_value = self._table.incremented(name)
        trace = self.tracer
        if trace is not None:
            trace("write", name, new_value, was=self._table.get(name))
        self._table.set(name, new_value)

    def statistics(self) -> StoreStatistics:
        channel = self._commands.statistics()
        return StoreStatistics(
            strategy=self.strategy,
            counters=len(self._table),
            max_counters=self._table.max_counters,
            guard=ChannelGuardStatistics(
                buffer_used=channel.current_buffer_used,
                buffer_size=int(channel.max_buffer_size),
                tasks_waiting_send=channel.tasks_waiting_send,
                tasks_waiting_receive=channel.tasks_waiting_receive,
                manager_running=channel.open_receive_channels > 0,
                manager_restarts=self._restarts,
            ),
        )
