"""One request's messages from the fast transport to the app, with a way to take them
as they arrive.

hypercorn hands an ASGI app its ``http.request`` and ``http.disconnect`` messages
through ``receive``; to notice a disconnect while the request is busy, the app
must keep a task waiting in ``receive`` (quart-trio runs a second task per request
for it). :class:`Inbox` is that ``receive`` -- and, under the ASGI scope extension
:data:`INBOX_EXTENSION`, a listener slot: an app that calls :meth:`Inbox.listen`
gets each message handed to a plain function the moment the transport has it
(the queued ones first), and needs no task at all. An app that never listens sees
an ordinary ``receive``. Nothing is allocated for a channel until someone calls
``receive``: messages that arrive before are held in a short list.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

__all__ = ["INBOX_EXTENSION", "Inbox"]

#: The key of ``scope["extensions"]`` under which an HTTP request's :class:`Inbox` is offered.
INBOX_EXTENSION = "trio_counters.inbox"

Listener = Callable[[dict[str, Any]], None]


class Inbox:
    """One request's messages: an ASGI ``receive``, or a listener called as each arrives.

    ``size`` is hypercorn's ``max_app_queue_size``: past that many unread messages,
    :meth:`put` waits for the app, as hypercorn's own channel does (backpressure).
    """

    __slots__ = ("_held", "_listener", "_put_end", "_get_end", "_size")

    def __init__(self, size: int) -> None:
        self._held: list[dict[str, Any]] = []
        self._listener: Listener | None = None
        self._put_end: trio.MemorySendChannel[dict[str, Any]] | None = None
        self._get_end: trio.MemoryReceiveChannel[dict[str, Any]] | None = None
        self._size = size

    async def put(self, message: dict[str, Any]) -> None:
        """Hand the app a message (the transport's side): to the listener if there is
        one, else into the queue, waiting only when ``size`` messages are unread."""
        listener = self._listener
        if listener is not None:
            listener(message)
        elif self._put_end is None and len(self._held) < self._size:
            self._held.append(message)  # nobody reads yet: no channel needed
        else:
            put_end = self._put_end or self._open()
            try:
                put_end.send_nowait(message)
            except trio.WouldBlock:
                await put_end.send(message)

    async def receive(self) -> dict[str, Any]:
        """The next message, as ASGI's ``receive``: always a checkpoint."""
        get_end = self._get_end
        if get_end is None:
            self._open()
            get_end = self._get_end
            assert get_end is not None
        return await get_end.receive()

    def listen(self, listener: Listener) -> None:
        """From now on, call ``listener(message)`` for each message, at once, in the
        transport's task; the messages already queued are handed over first, in order.

        ``listener`` must neither block nor raise. Calling this again replaces the
        listener (with one that drops everything, say, once the request is answered).
        """
        held, self._held = self._held, []
        for message in held:
            listener(message)
        if self._get_end is not None:
            while True:
                try:
                    message = self._get_end.receive_nowait()
                except trio.WouldBlock:
                    break
                listener(message)
        self._listener = listener

    def _open(self) -> trio.MemorySendChannel[dict[str, Any]]:
        """The channel a reader of :meth:`receive` waits on, with the held messages in it."""
        put_end, self._get_end = trio.open_memory_channel[dict[str, Any]](self._size)
        self._put_end = put_end
        for message in self._held:
            put_end.send_nowait(message)  # at most size of them: they fit
        self._held = []
        return put_end
