"""The lean pipeline's HTTP connection: a request served in hypercorn's task, no nursery.

quart-trio's :class:`~quart_trio.asgi.TrioASGIHTTPConnection` serves every request
with a nursery and two tasks: one reads ``receive`` (the body, then the
disconnect, which cancels the nursery), the other runs the app and sends the
answer. :class:`LeanHTTPConnection` runs the app in the task hypercorn already
started for the request, inside one cancel scope, and:

* where the server offers an :class:`~trio_counters.transport.inbox.Inbox`
  (``scope["extensions"]["trio_counters.inbox"]``: the fast transport), takes the
  messages as they arrive through a plain function -- the body goes into the
  request, a disconnect cancels the scope -- so no task waits in ``receive``;
* elsewhere (hypercorn's own transport, Quart's test client), keeps one task
  reading ``receive`` beside the request, in a nursery, as quart-trio does.

Either way, a disconnect cancels the request until its answer starts, and no
later: the answer's ``send()`` is never cancelled by the end of its own request
(hypercorn reports that end as a disconnect, from inside the last ``send()``),
which is the close defect ``trio_counters.connection`` works around for
quart-trio on hypercorn's transport. An answer whose body is one piece of data
(any ``str`` or ``bytes`` body) goes out in two ``send()`` calls instead of
three; the bytes on the wire are the same. ``RESPONSE_TIMEOUT`` bounds the
sending of a streamed answer, as in quart-trio (see :meth:`_send_response`).
"""

from __future__ import annotations

from typing import Any

import trio
from quart.utils import encode_headers
from quart.wrappers.response import DataBody, Response
from quart_trio.asgi import TrioASGIHTTPConnection

from ..transport.inbox import INBOX_EXTENSION

__all__ = ["LeanHTTPConnection"]


def _drop(message: dict[str, Any]) -> None:
    """The listener left on an inbox once its request is over."""


class LeanHTTPConnection(TrioASGIHTTPConnection):
    """An ``asgi_http_class`` for QuartTrio: no nursery or task per request where the
    server offers an inbox, one watching task where it does not."""

    _request: Any = None
    #: Cancels the request: set until its answer starts.
    _cancel: Any = None

    async def __call__(self, receive: Any, send: Any) -> None:
        request = self._create_request_from_scope(send)
        inbox = self.scope.get("extensions", {}).get(INBOX_EXTENSION)
        if inbox is None:
            await self._serve_watched(request, receive, send)
            return
        with trio.CancelScope() as scope:
            self._request = request
            self._cancel = scope.cancel
            inbox.listen(self._deliver)
            try:
                response = await self.app.handle_request(request)
                self._cancel = None  # answered: its end is no disconnect to act on
                await self._send_response(send, response)
            finally:
                # Nothing to deliver to any more; and no reference cycle (the request
                # refers to this connection) left for the garbage collector to find.
                inbox.listen(_drop)
                self._request = None

    def _deliver(self, message: dict[str, Any]) -> None:
        """The inbox's listener: called in the transport's task, so it never blocks."""
        if message["type"] == "http.request":
            body = self._request.body
            body.append(message.get("body", b""))
            if not message.get("more_body", False):
                body.set_complete()
        elif message["type"] == "http.disconnect" and self._cancel is not None:
            self._cancel()

    async def _serve_watched(self, request: Any, receive: Any, send: Any) -> None:
        """quart-trio's way, with one task: the request runs here, beside a watcher."""
        async with trio.open_nursery() as nursery:
            self._cancel = nursery.cancel_scope.cancel
            nursery.start_soon(self._watch, request, receive)
            response = await self.app.handle_request(request)
            self._cancel = None
            await self._send_response(send, response)
            nursery.cancel_scope.cancel()  # the watcher

    async def _watch(self, request: Any, receive: Any) -> None:
        """Feed the body to the request; on a disconnect before the answer, cancel it."""
        while True:
            message = await receive()
            if message["type"] == "http.request":
                request.body.append(message.get("body", b""))
                if not message.get("more_body", False):
                    request.body.set_complete()
            elif message["type"] == "http.disconnect":
                if self._cancel is not None:
                    self._cancel()
                return

    async def _send_response(self, send: Any, response: Any) -> None:
        """Send the answer: a body of one piece in two sends, anything else as
        quart-trio does, within ``RESPONSE_TIMEOUT``.

        The timeout is armed only for a body that is produced as it is sent (a
        stream, a file), whose production it bounds. A body of one piece is two
        transport writes, which the timeout could not interrupt anyway: hypercorn
        shields its writes (and so does the fast transport), until the graceful
        shutdown deadline. Not arming it spares trio a deadline per request.
        """
        body = response.response if isinstance(response, Response) else None
        if type(body) is not DataBody:  # a stream, a file, a werkzeug response: as Quart does
            if isinstance(response, Response) and response.timeout != Ellipsis:
                timeout = response.timeout
            else:
                timeout = self.app.config["RESPONSE_TIMEOUT"]
            if timeout is None:
                await super()._send_response(send, response)
            else:
                with trio.move_on_after(timeout):
                    await super()._send_response(send, response)
            return
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": encode_headers(response.headers),
            }
        )
        await send({"type": "http.response.body", "body": body.data[body.begin : body.end], "more_body": False})
