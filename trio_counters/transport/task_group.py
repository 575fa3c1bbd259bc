"""The fast transport's per-connection TaskGroup: messages reach the app without a yield.

Handing the app ``http.request`` or ``http.disconnect`` never yields to trio
unless the request's channel is full (``max_app_queue_size``), so quart-trio's
receiving task cannot run in the middle of the app's last ``send()``; a full
channel still waits, as in hypercorn, which keeps backpressure. Why this
exists: docs/transport.md.
"""

from __future__ import annotations

from typing import Any

import trio

from .hypercorn_internals import StockTaskGroup, handle_app


class TaskGroup(StockTaskGroup):  # type: ignore[misc,valid-type]
    """hypercorn's per-connection TaskGroup, handing messages to the app without a yield.

    hypercorn gives each request's app task a memory channel and puts
    ``http.request`` / ``http.disconnect`` into it with ``await send()``, which
    always yields to trio. Here a put that fits goes in with ``send_nowait``;
    only a full channel (``max_app_queue_size``) waits, as before. The app's
    ``send`` goes through ``wrap_send``, the connection's write coalescing.
    """

    def __init__(self, wrap_send: Any) -> None:
        super().__init__()
        self._wrap_send = wrap_send

    async def spawn_app(self, app: Any, config: Any, scope: Any, send: Any) -> Any:
        put_channel, get_channel = trio.open_memory_channel[Any](config.max_app_queue_size)
        self._nursery.start_soon(
            handle_app,
            app,
            config,
            scope,
            get_channel.receive,
            self._wrap_send(scope, send),
            trio.to_thread.run_sync,
            trio.from_thread.run,
        )
        put_nowait = put_channel.send_nowait

        async def put(message: Any) -> None:
            try:
                put_nowait(message)
            except trio.WouldBlock:
                await put_channel.send(message)

        return put
