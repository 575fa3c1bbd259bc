"""hypercorn's trio ``TCPServer``, guarded: no connection can end the worker.

:class:`GuardedTCPServer` is what ``TRIO_COUNTERS_TRANSPORT=stock`` installs,
and the base of :class:`~trio_counters.transport.tcp_server.FastTCPServer`. It
is hypercorn's own connection handling with four guards:

* Whatever a connection's handling raises (but cancellation, which always
  propagates) closes that connection and is logged once, with its traceback
  (at most :data:`LOGGED_TRACEBACK` characters of it);
  every other connection and the app go on. In hypercorn it escapes the
  connection's task, cancels ``serve_listeners`` and ends the worker.
* Its protocols are :class:`~trio_counters.transport.protocol.GuardedProtocolWrapper`'s.
* A write that meets the connection's close (``send_eof``, which hypercorn
  does outside its send lock) is a write to a closed connection, as it is
  after the close; hypercorn logs it as the app's error.
* A write is shielded, as in hypercorn, but only until the worker's graceful
  shutdown deadline (:class:`~trio_counters.transport.worker_context.ShutdownDeadline`);
  a write cut there closes the connection. In hypercorn a client that stops
  reading holds the worker past ``--graceful-timeout``, for ever.

Why and how: docs/transport.md.
"""

from __future__ import annotations

import traceback
from typing import Any

import trio

from .hypercorn_internals import (
    Closed,
    ConnectionState,
    RawData,
    StockTCPServer,
    parse_socket_addr,
)
from .hypercorn_internals import StockTaskGroup as TaskGroup
from .protocol import GuardedProtocolWrapper
from .worker_context import ShutdownDeadline

__all__ = ["GuardedTCPServer"]


#: The most of one failure's traceback that goes to the log: its messages may quote
#: what the client sent, and no client should write 100 KB to the log per connection.
LOGGED_TRACEBACK = 8192


def bounded_traceback(failure: BaseException) -> str:
    """The failure's traceback, its middle left out if it is over :data:`LOGGED_TRACEBACK`."""
    text = "".join(traceback.format_exception(failure)).rstrip("\n")
    if len(text) <= LOGGED_TRACEBACK:
        return text
    head, tail = LOGGED_TRACEBACK // 4, LOGGED_TRACEBACK * 3 // 4
    return f"{text[:head]}\n[... {len(text) - head - tail} characters left out ...]\n{text[-tail:]}"


class GuardedTCPServer(StockTCPServer):  # type: ignore[misc,valid-type]
    """hypercorn's trio ``TCPServer``: one connection's failure ends that connection only."""

    def __init__(self, app: Any, config: Any, context: Any, state: Any, stream: Any) -> None:
        super().__init__(app, config, context, state, stream)
        self._shutdown = ShutdownDeadline.of(context, config)

    async def run(self) -> None:
        self._shutdown.enter()  # for CompleteSends, in this connection's app tasks
        try:
            await self._serve()
        except BaseException as error:
            # Exceptions are this connection's failure; anything else (Cancelled,
            # KeyboardInterrupt) is not ours to stop.
            if isinstance(error, BaseExceptionGroup):
                failure, rest = error.split(Exception)
            elif isinstance(error, Exception):
                failure, rest = error, None
            else:
                raise
            if failure is None:
                raise
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self.stream)  # closed already, unless closing failed
                await self._protocol_closed()
                await self.config.log.error(
                    "trio_counters: a connection's handling failed; that connection was "
                    "closed, the worker goes on\n%s",
                    bounded_traceback(failure),
                )
            if rest is not None:
                raise rest from None

    async def _serve(self) -> None:
        # hypercorn's TCPServer.run, with GuardedProtocolWrapper for its protocols;
        # what runs once the protocol is up is _serve_connection's.
        try:
            try:
                with trio.fail_after(self.config.ssl_handshake_timeout):
                    await self.stream.do_handshake()
            except (trio.BrokenResourceError, trio.TooSlowError):
                return  # Handshake failed
            alpn_protocol = self.stream.selected_alpn_protocol()
            socket = self.stream.transport_stream.socket
            ssl = True
        except AttributeError:  # Not SSL
            alpn_protocol = "http/1.1"
            socket = self.stream.socket
            ssl = False

        try:
            client = parse_socket_addr(socket.family, socket.getpeername())
            server = parse_socket_addr(socket.family, socket.getsockname())

            async with self._new_task_group() as task_group:
                self._task_group = task_group
                self.protocol = GuardedProtocolWrapper(
                    self.app,
                    self.config,
                    self.context,
                    task_group,
                    ConnectionState(self.state),
                    ssl,
                    client,
                    server,
                    self.protocol_send,
                    alpn_protocol,
                )
                await self.protocol.initiate()
                await self._serve_connection(task_group)
        except OSError:
            pass
        finally:
            await self._close()

    async def _protocol_closed(self) -> None:
        """Tell the protocol its connection is gone, after a failure: its streams close
        (the worker's HTTP/2 stream count with them) as they do when a client leaves."""
        protocol = getattr(self, "protocol", None)
        if protocol is None:
            return
        try:
            await protocol.handle(Closed())
        except Exception:
            pass  # the failure is logged already; this is only the streams' bookkeeping

    def _new_task_group(self) -> Any:
        """The task group of this connection's app calls: hypercorn's."""
        return TaskGroup()

    async def _serve_connection(self, task_group: Any) -> None:
        """Read until the connection ends, as hypercorn does: its idle timer, then reads."""
        await self.idle_task.restart(task_group, self._idle_timeout)
        await self._read_data()

    async def protocol_send(self, event: Any) -> None:
        if not isinstance(event, RawData):
            await super().protocol_send(event)
            return
        # As hypercorn's, with the shield ending at the graceful shutdown deadline.
        async with self.send_lock:
            with self._shutdown.shield() as shield:
                try:
                    await self.stream.send_all(event.data)
                except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
                    # Busy: the one writer outside the send lock is _close's
                    # send_eof, in the read loop's task: the connection is
                    # closing, and these bytes could never be sent after it.
                    # hypercorn lets that escape into "Error in ASGI Framework".
                    await self.protocol.handle(Closed())
                    return
            if shield.cancelled_caught:
                # Cut at the deadline, maybe mid-response: close at once.
                await trio.aclose_forcefully(self.stream)
                await self.protocol.handle(Closed())
