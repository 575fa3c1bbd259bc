"""Make hypercorn's trio worker close connections that quart-trio has answered.

:class:`CompleteSends` guarantees that every HTTP ``send()`` of the app runs to
its end (or to the worker's graceful shutdown deadline), so hypercorn's own trio
transport always closes a connection that must close and always arms its idle
timer. On the fast transport (the default, :mod:`trio_counters.transport`) it
passes ``send`` through untouched, since the defect cannot occur there; nor can it
under the lean pipeline (:mod:`trio_counters.pipeline`), which never cancels a
request once its answer has started. The app's :class:`~trio_counters.gate.Gate`
uses :func:`send_completely` for the one case left: quart-trio's own pipeline on
hypercorn's own transport. The defect and why this fixes it: docs/transport.md,
"The stack defect and its fix".
"""

from __future__ import annotations

from typing import Any

from . import transport
from .transport.worker_context import shutdown_shield

__all__ = ["CompleteSends", "sends_need_completing", "send_completely"]


def sends_need_completing() -> bool:
    """Whether the transport that serves needs the app's sends shielded: hypercorn's
    own (the ``stock`` transport) does, the fast one does not."""
    return transport.active() != "fast"


async def send_completely(send: Any, message: dict[str, Any]) -> None:
    """``await send(message)``, shielded until the graceful shutdown deadline: an HTTP/2
    send can wait for the client's flow control, which may never come."""
    with shutdown_shield():
        await send(message)


class CompleteSends:
    """ASGI middleware: every HTTP ``send()`` of the wrapped app runs to its end (or to
    the graceful shutdown deadline)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not sends_need_completing():
            await self.app(scope, receive, send)
            return

        async def send_to_completion(message: dict[str, Any]) -> None:
            await send_completely(send, message)

        await self.app(scope, receive, send_to_completion)
