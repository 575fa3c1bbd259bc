"""hypercorn's trio ``TCPServer`` with a re-armable idle deadline and coalesced writes.

:class:`FastTCPServer` keeps hypercorn's protocols (TLS, h11, h2,
``max_requests``, graceful shutdown) and changes how a connection waits: one
watchdog task per connection enforces ``keep_alive_timeout`` and ends when the
read loop ends, so a dead connection's tasks end at once; an idle connection
closes as soon as the worker is told to stop, a busy one after its response;
and the close a ``Closed`` event asks for is shielded, so it always happens.
It has :class:`~trio_counters.transport.guarded.GuardedTCPServer`'s guards;
its writes are :class:`~trio_counters.transport.writer.CoalescingWriter`'s.
Why and how: docs/transport.md.
"""

from __future__ import annotations

import os
from math import inf
from typing import Any

import trio

from .guarded import GuardedTCPServer
from .hypercorn_internals import MAX_RECV, Closed, RawData, Updated
from .task_group import TaskGroup
from .writer import HIGH_WATER, CoalescingWriter

__all__ = ["FastTCPServer"]


class FastTCPServer(CoalescingWriter, GuardedTCPServer):
    """hypercorn's trio ``TCPServer`` with a re-armable idle deadline and coalesced writes,
    and :class:`GuardedTCPServer`'s guards."""

    def __init__(self, app: Any, config: Any, context: Any, state: Any, stream: Any) -> None:
        super().__init__(app, config, context, state, stream)
        # Coalesced writes: chunks waiting for one write, written in order by
        # one writer at a time.
        self._out: list[bytes] = []
        self._out_size = 0
        self._writing = False
        self._write_done = trio.lowlevel.ParkingLot()
        # The tasks inside an HTTP/1.x send() of the app: their bytes wait in
        # the buffer until that send() returns.
        self._in_send: set[trio.lowlevel.Task] = set()
        # The tasks inside hypercorn's send(None) after the app ended (see protocol_send).
        self._ending: set[trio.lowlevel.Task] = set()
        # A response head held after its send() for the body, which nearly
        # always follows without a yield and is written with it. A deadline in
        # the past on this scope wakes _write_held at the next scheduling round
        # if the head is still waiting then (the app yielded in between).
        self._held = trio.CancelScope()
        self._holding = False
        self._reading = False
        # The idle deadline: entered by the watchdog task, moved by protocol_send.
        self._idle_scope = trio.CancelScope()
        self._busy = False
        # Ends the watchdog when the read loop ends.
        self._stop_watchdog = trio.CancelScope()
        # Plain TCP: the trio socket, for direct reads and writes; None under TLS.
        self._socket = stream.socket if isinstance(stream, trio.SocketStream) else None

    def _new_task_group(self) -> TaskGroup:
        return TaskGroup(self._coalesce)

    async def _serve_connection(self, task_group: TaskGroup) -> None:
        # In place of hypercorn's idle timer task, the watchdog, which ends
        # when reading ends.
        self._idle_scope.deadline = trio.current_time() + self.config.keep_alive_timeout
        task_group.spawn(self._watch_idle)
        self._reading = True
        task_group.spawn(self._write_held)
        try:
            await self._read_data()
        finally:
            self._stop_watchdog.cancel()
            self._reading = False  # from now on nothing is held
            self._held.cancel()

    async def protocol_send(self, event: Any) -> None:
        if isinstance(event, RawData):
            if (
                self._ending
                and trio.lowlevel.current_task() in self._ending
                and trio.current_effective_deadline() == -inf
            ):
                # hypercorn's 500 for an app cancelled before it answered (at the
                # graceful shutdown deadline, say): not written, the connection just
                # closes -- as on hypercorn's own transport, whose locked write raises
                # Cancelled there. Raised here the same way.
                await trio.lowlevel.checkpoint()
            if event.data:
                self._out.append(event.data)
                self._out_size += len(event.data)
                if (
                    self._out_size >= HIGH_WATER
                    or trio.lowlevel.current_task() not in self._in_send
                ):
                    await self._flush()
        elif isinstance(event, Updated):
            self._busy = not event.idle
            if event.idle:
                # Re-arm first: a cancellation during the flush must not leave
                # the connection without a deadline.
                if self.context.terminated.is_set():
                    self._idle_scope.deadline = -inf
                else:
                    self._idle_scope.deadline = (
                        trio.current_time() + self.config.keep_alive_timeout
                    )
                await self._flush()
            else:
                self._idle_scope.deadline = inf
        elif isinstance(event, Closed):
            # Shielded, so that a cancellation arriving now cannot skip the
            # close. A write in progress is not waited for: closing the socket
            # ends it, as hypercorn's close does.
            with trio.CancelScope(shield=True):
                if not self._writing:
                    await self._flush()
                await self._close()
            await self.protocol.handle(Closed())

    async def _watch_idle(self) -> None:
        """Close the connection when its idle deadline passes, or at shutdown when idle."""
        with self._stop_watchdog:
            with self._idle_scope:
                await self.context.terminated.wait()
                if self._busy:
                    # Shutting down mid-request: the response ends, and
                    # Updated(idle=True) then sets the deadline to -inf.
                    await trio.sleep_forever()
            with trio.CancelScope(shield=True):
                await self._initiate_server_close()

    async def _read_data(self) -> None:
        # As hypercorn's: read until EOF, an error, or read_timeout, handing each
        # chunk to the protocol. On a plain TCP socket: wait for readability, then
        # one os.read, without trio's per-call context managers and trailing
        # yield; and no cancel scope at all when there is no read_timeout.
        sock = self._socket
        read_timeout = self.config.read_timeout
        while True:
            scope = None
            try:
                if sock is None:
                    with trio.CancelScope(
                        deadline=trio.current_time() + (read_timeout or inf)
                    ) as scope:
                        data = await self.stream.receive_some(MAX_RECV)
                else:
                    fd = sock.fileno()
                    if fd == -1:  # closed here: a Closed event, or the idle watchdog
                        break
                    if read_timeout:
                        with trio.CancelScope(
                            deadline=trio.current_time() + read_timeout
                        ) as scope:
                            await trio.lowlevel.wait_readable(sock)
                        if scope.cancelled_caught:
                            break
                    else:
                        await trio.lowlevel.wait_readable(sock)
                    # Closed after the wake-up but before this task ran (by a
                    # Closed event, say), fd may already belong to a connection
                    # accepted since: check again, with no await in between.
                    if sock.fileno() != fd:
                        break
                    try:
                        data = os.read(fd, MAX_RECV)
                    except BlockingIOError:
                        continue
            except (trio.ClosedResourceError, trio.BrokenResourceError, OSError):
                break
            if scope is not None and scope.cancelled_caught:
                break
            await self.protocol.handle(RawData(bytes(data)))
            if data == b"":
                break
        await self.protocol.handle(Closed())
