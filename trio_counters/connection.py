"""Make hypercorn's trio worker close connections that quart-trio has answered.

:class:`CompleteSends` guarantees that every HTTP ``send()`` of the app runs to
its end (or to the worker's graceful shutdown deadline), so hypercorn's own trio
transport always closes a connection that must close and always arms its idle
timer. On the fast transport (the default, :mod:`trio_counters.transport`) it
passes ``send`` through untouched, since the defect cannot occur there. The defect and why this fixes it: docs/transport.md,
"The stack defect and its fix".
"""

from __future__ import annotations

from typing import Any

from . import transport
from .transport.worker_context import shutdown_shield

__all__ = ["CompleteSends"]


class CompleteSends:
    """ASGI middleware: every HTTP ``send()`` of the wrapped app runs to its end (or to
    the graceful shutdown deadline)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or transport.active() == "fast":
            await self.app(scope, receive, send)
            return

        async def send_to_completion(message: dict[str, Any]) -> None:
            # Shielded until the graceful shutdown deadline: an HTTP/2 send can wait
            # for the client's flow control, which may never come.
            with shutdown_shield():
                await send(message)

        await self.app(scope, receive, send_to_completion)
