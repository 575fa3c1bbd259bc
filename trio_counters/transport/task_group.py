"""The fast transport's per-connection TaskGroup: messages reach the app without a yield.

Handing the app ``http.request`` or ``http.disconnect`` never yields to trio
unless the request's queue is full (``max_app_queue_size``), so quart-trio's
receiving task cannot run in the middle of the app's last ``send()``; a full
queue still waits, as in hypercorn, which keeps backpressure. Each HTTP request's
messages go through an :class:`~.inbox.Inbox`, offered to the app under
``scope["extensions"]["trio_counters.inbox"]`` so that an app can take them as
they arrive, with no task waiting in ``receive``. Why this exists:
docs/transport.md.
"""

from __future__ import annotations

from typing import Any

import trio

from .hypercorn_internals import StockTaskGroup, handle_app
from .inbox import INBOX_EXTENSION, Inbox


class TaskGroup(StockTaskGroup):  # type: ignore[misc,valid-type]
    """hypercorn's per-connection TaskGroup, handing messages to the app without a yield.

    hypercorn gives each request's app task a memory channel and puts
    ``http.request`` / ``http.disconnect`` into it with ``await send()``, which
    always yields to trio. Here each request gets an :class:`~.inbox.Inbox`: a put
    that fits never yields; only a full queue (``max_app_queue_size``) waits, as
    before. The app's ``send`` goes through ``wrap_send``, the connection's write
    coalescing.
    """

    def __init__(self, wrap_send: Any) -> None:
        super().__init__()
        self._wrap_send = wrap_send

    async def spawn_app(self, app: Any, config: Any, scope: Any, send: Any) -> Any:
        inbox = Inbox(config.max_app_queue_size)
        if scope["type"] == "http":
            scope.setdefault("extensions", {})[INBOX_EXTENSION] = inbox
        self._nursery.start_soon(
            handle_app,
            app,
            config,
            scope,
            inbox.receive,
            self._wrap_send(scope, send),
            trio.to_thread.run_sync,
            trio.from_thread.run,
        )
        return inbox.put
