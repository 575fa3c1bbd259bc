"""The fast transport's writes: coalesced per ``send()``, in order, cut short only at shutdown.

:class:`CoalescingWriter` is the write half of
:class:`~trio_counters.transport.tcp_server.FastTCPServer`. It guarantees that
the bytes of a connection reach the socket in the order they were sent, by one
writer at a time; that a write once begun is never cut by a cancellation (as in
hypercorn) before the worker's graceful shutdown deadline; that at most
:data:`HIGH_WATER` bytes wait in memory; and that an HTTP/1.x ``send()``
holds nothing while the app awaits, so a streamed body still goes out chunk by
chunk. Why and how: docs/transport.md.
"""

from __future__ import annotations

import os
from math import inf
from typing import Any

import trio

from .hypercorn_internals import Closed

__all__ = ["HIGH_WATER", "CoalescingWriter"]

#: Buffered bytes past which the sender writes at once instead of waiting for
#: the end of the response: bounds memory per connection and keeps backpressure.
HIGH_WATER = 64 * 1024


class CoalescingWriter:
    """The write side of :class:`FastTCPServer`, whose ``__init__`` sets up this state."""

    protocol: Any
    stream: Any
    _out: list[bytes]
    _out_size: int
    _writing: bool
    _write_done: trio.lowlevel.ParkingLot
    _in_send: set[trio.lowlevel.Task]
    _ending: set[trio.lowlevel.Task]
    _held: trio.CancelScope
    _holding: bool
    _reading: bool
    _socket: Any
    _shutdown: Any  # the worker's ShutdownDeadline

    async def _flush(self) -> None:
        """Write everything buffered, in order, one write per turn."""
        if self._holding:
            self._holding = False
            self._held.deadline = inf
        while self._out:
            if self._writing:
                # The writer loops until the buffer is empty; wait for it.
                await self._write_done.park()
                continue
            chunks = self._out
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            self._out = []
            self._out_size = 0
            self._writing = True
            try:
                await self._write(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                broken = True
            else:
                broken = False
            finally:
                self._writing = False
                self._write_done.unpark_all()
            if broken:
                self._out = []
                self._out_size = 0
                await self.protocol.handle(Closed())

    def _coalesce(self, scope: dict[str, Any], send: Any) -> Any:
        """The app's ``send`` for one request: an HTTP/1.x one writes once, when it returns.

        Only HTTP/1.x: there a ``send()`` waits on nothing but the socket, so
        holding its bytes until it returns holds them for no time at all. An h2
        ``send()`` can wait for the peer's flow control, which must not find our
        bytes still buffered; it, and websockets, write at once. A response head
        is held a little longer, for its body: see :meth:`_hold`.

        Every HTTP ``send(None)`` -- hypercorn's call once the app has ended, which
        answers 500 if the app never did -- is noted in ``_ending``: see
        ``FastTCPServer.protocol_send``.
        """
        if scope.get("type") != "http":
            return send
        ending = self._ending
        if scope.get("http_version") not in ("1.0", "1.1"):

            async def send_marked(message: dict[str, Any] | None) -> None:
                if message is not None:
                    await send(message)
                    return
                task = trio.lowlevel.current_task()
                ending.add(task)
                try:
                    await send(None)
                finally:
                    ending.discard(task)

            return send_marked
        in_send = self._in_send

        async def send_coalesced(message: dict[str, Any] | None) -> None:
            task = trio.lowlevel.current_task()
            in_send.add(task)
            if message is None:
                ending.add(task)
            try:
                await send(message)
            finally:
                in_send.discard(task)
                ending.discard(task)
                if self._out and self._reading and _is_head(message):
                    self._hold()
                else:
                    await self._flush()  # at once when nothing is buffered

        return send_coalesced

    def _hold(self) -> None:
        """Leave the buffered head for the body's write, or for _write_held."""
        self._holding = True
        self._held.deadline = -inf

    async def _write_held(self) -> None:
        """Write a response head whose task yielded to trio before sending the body."""
        while self._reading:
            with self._held:
                await trio.sleep_forever()
            self._held = trio.CancelScope()
            await self._flush()

    async def _write(self, data: bytes) -> None:
        """Write all of ``data``; a write once begun is cut by nothing but the worker's
        graceful shutdown deadline, and then raises ``BrokenResourceError``.

        On a plain TCP socket, the bytes go to the kernel with one ``os.write``
        when it takes them all (almost always, on a response), with no cancel
        scope and no yield; only a partial write waits, shielded until that
        deadline, for the socket to drain. Otherwise (TLS) this is hypercorn's
        shielded ``send_all``, with the same bound.
        """
        sock = self._socket
        if sock is None:
            with self._shutdown.shield() as shield:
                await self.stream.send_all(data)
        else:
            sent = self._write_some(sock, data)
            if sent == len(data):
                return
            with self._shutdown.shield() as shield:
                remaining = memoryview(data)[sent:]
                while remaining:
                    await trio.lowlevel.wait_writable(sock)
                    remaining = remaining[self._write_some(sock, remaining) :]
        if shield.cancelled_caught:
            raise trio.BrokenResourceError("write cut at the graceful shutdown deadline")

    @staticmethod
    def _write_some(sock: Any, data: bytes | memoryview) -> int:
        fd = sock.fileno()
        if fd == -1 or sock.did_shutdown_SHUT_WR:
            raise trio.ClosedResourceError("the connection is closed")
        try:
            return os.write(fd, data)
        except BlockingIOError:
            return 0
        except OSError as error:
            raise trio.BrokenResourceError(f"the peer is gone: {error}") from error



def _is_head(message: dict[str, Any] | None) -> bool:
    return message is not None and message.get("type") == "http.response.start"
