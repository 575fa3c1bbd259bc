"""Make hypercorn's trio worker close connections that quart-trio has answered.

The defect (quart-trio 0.12 on hypercorn 0.14-0.18, trio worker): a response that
must close the connection -- HTTP/1.0 without keep-alive, which is what ``ab``
sends, or ``Connection: close`` -- arrives in full, but the socket is never
closed, and idle keep-alive connections are never reaped. ``ab -c 200`` stalls
after its first 200 requests.

Why: the app's last ``send()`` runs hypercorn's end-of-response work in the
app's own task. Inside that call hypercorn hands the app ``http.disconnect``
(``hypercorn/protocol/h11.py``, ``_maybe_recycle``); quart-trio's receiving task
takes it and cancels the request's nursery (``quart_trio/asgi.py``,
``handle_messages``); the very next checkpoint in that same ``send()`` -- the
socket's ``send_eof`` in ``hypercorn/trio/tcp_server.py`` ``_close``, or the
start of the keep-alive idle timer -- raises ``Cancelled``, so the close and the
timer are skipped.

The fix: shield each ``send()`` the app makes. Hypercorn then finishes its own
bookkeeping (close the socket, or arm the idle timer) before the cancellation
lands on the next checkpoint back in quart-trio, which ends the request as it
meant to. The shield holds back nothing that could hang: the one slow part of
a send, writing to the socket, is already shielded by hypercorn itself.

Only hypercorn's own trio transport needs it. On ours (the default,
:mod:`trio_counters.transport`) the close is shielded where it happens and a
``send()`` never yields to quart-trio midway, so the defect cannot occur (the
tests prove it with a plain QuartTrio app), and the middleware passes ``send``
through untouched: a cancel scope per send is a cost for nothing there.
"""

from __future__ import annotations

from typing import Any

import trio

from . import transport

__all__ = ["CompleteSends"]


class CompleteSends:
    """ASGI middleware: every HTTP ``send()`` of the wrapped app runs to its end."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or transport.active() == "fast":
            await self.app(scope, receive, send)
            return

        async def send_to_completion(message: dict[str, Any]) -> None:
            with trio.CancelScope(shield=True):
                await send(message)

        await self.app(scope, receive, send_to_completion)
