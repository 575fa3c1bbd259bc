"""The one ASGI middleware in front of Quart: what must happen to every HTTP request
before Quart sees it, and after it has answered.

:class:`Gate` folds what were three middlewares into one call:

* a query string that is not UTF-8 gets 400 here: Quart's router decodes the raw
  query string before any handler or error handler runs, so such a request
  (possible over HTTP/2, whose framing lets any byte through) would otherwise
  end in a bare 500;
* every request is counted by endpoint and status and timed, through the app's
  :class:`~trio_counters.metrics.RequestRecorder` (``cancelled`` if it ended
  unanswered);
* on hypercorn's own transport under quart-trio's own pipeline, every ``send()``
  runs to its end (:func:`~trio_counters.connection.send_completely`): the close
  defect's fix. Neither the fast transport nor the lean pipeline needs it.

Per request it costs one small object (the ``send`` that notes the status).
"""

from __future__ import annotations

import time
from typing import Any

from .connection import send_completely, sends_need_completing
from .metrics import RequestRecorder

__all__ = ["Gate"]

_NOT_UTF8 = b"query string is not valid UTF-8\n"
_NOT_UTF8_HEADERS = [
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"content-length", str(len(_NOT_UTF8)).encode()),
]


class Gate:
    """ASGI middleware: refuse a query string that is not UTF-8, count and time every
    answer, and complete every send where the transport and pipeline need it.

    ``complete_sends``: whether the app may need its sends completed -- true under
    quart-trio's own pipeline; then it is asked of the transport per request, since
    which one serves is known only once hypercorn has started.
    """

    def __init__(self, app: Any, recorder: RequestRecorder, *, complete_sends: bool) -> None:
        self.app = app
        self.recorder = recorder
        self.complete_sends = complete_sends

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        answer = _Answer(send, self.complete_sends and sends_need_completing())
        try:
            query = scope["query_string"]
            if not query.isascii():  # ASCII is UTF-8: the decoding is only for the rest
                try:
                    query.decode()
                except UnicodeDecodeError:
                    await answer({"type": "http.response.start", "status": 400, "headers": _NOT_UTF8_HEADERS})
                    await answer({"type": "http.response.body", "body": _NOT_UTF8})
                    return
            await self.app(scope, receive, answer)
        finally:
            self.recorder.record(scope["path"], answer.status, time.perf_counter() - start)


class _Answer:
    """One request's ``send``: notes the status of the answer, and completes each send
    (until the graceful shutdown deadline) when ``complete`` is set."""

    __slots__ = ("_send", "_complete", "status")

    def __init__(self, send: Any, complete: bool) -> None:
        self._send = send
        self._complete = complete
        #: The answer's status, once its head has been sent; None until then.
        self.status: int | None = None

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        if self._complete:
            await send_completely(self._send, message)
        else:
            await self._send(message)
