"""Bare ASGI counter apps: the same API with no Quart, as reference ceilings.

Two entry points, one code path, served by hypercorn through
``benchmarks.reference:served("bare")`` and ``served("bare+lock")``, which
install trio_counters' transport first, so that a ceiling runs on the same
transport as the rows it is compared with:

* ``unguarded_app`` -- the ceiling: bench.py's ``bare`` row and the benchmarks'
  ``bare`` rows. The thinnest honest counter: read and write with no ``await``
  between them, which trio makes atomic without a lock.
* ``app`` -- the same, guarded exactly like the ``lock`` strategy (read,
  ``await trio.sleep(0)``, write, all under one ``trio.Lock``): bench.py's
  ``bare-lock`` row, asked for by name. The gap between it and ``lock`` is what
  Quart and quart-trio cost per request for the same work. Under 200 clients the
  lock lets one holder through its checkpoint per scheduling round, which costs
  the same with or without a framework: it is no ceiling.

It speaks the same API: ``/set?name=N&val=V``, ``/get?name=N``, ``/inc?name=N``
(GET, and POST for /set and /inc with the parameters in the query string or an
urlencoded form), one line of text/plain per answer; 404 for a missing counter,
409 on int64 overflow, 400 for bad input. Counters ``i`` and ``j`` start at 0.

It needs no connection-close fix: quart-trio's defect (see
trio_counters/connection.py) comes from quart-trio cancelling the request while
the app's last ``send()`` is still inside hypercorn; this app never cancels
anything, so hypercorn closes ``Connection: close`` / HTTP/1.0 answers itself.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs

import trio

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_INTEGER = re.compile(r"[+-]?[0-9]{1,19}")
_MAX_BODY = 4096

counters: dict[str, int] = {"i": 0, "j": 0}
lock = trio.Lock()


class _Answer(Exception):
    def __init__(self, status: int, text: str) -> None:
        self.status, self.text = status, text


async def _params(scope: dict[str, Any], receive: Any) -> dict[str, list[str]]:
    params = parse_qs(scope["query_string"].decode("latin-1"))
    if scope["method"] == "POST":
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > _MAX_BODY:
                raise _Answer(413, "request body too large")
            if not message.get("more_body"):
                break
        for key, values in parse_qs(body.decode("latin-1")).items():
            params.setdefault(key, []).extend(values)
    return params


def _one(params: dict[str, list[str]], key: str) -> str:
    values = params.get(key, [])
    if len(values) != 1 or not values[0]:
        raise _Answer(400, f"give {key} once")
    return values[0]


def _read(path: str, method: str, params: dict[str, list[str]]) -> tuple[str, int]:
    """Check the request and read what the write needs: the counter, or the value to set."""
    allowed = {"/get": ("GET",), "/set": ("GET", "POST"), "/inc": ("GET", "POST")}
    if path not in allowed:
        raise _Answer(404, "not found: the endpoints are /get, /set and /inc")
    if method not in allowed[path]:
        raise _Answer(405, f"method {method} not allowed here")
    name = _one(params, "name")
    if path == "/set":
        raw = _one(params, "val")
        value = int(raw) if _INTEGER.fullmatch(raw) else None
        if value is None or not INT64_MIN <= value <= INT64_MAX:
            raise _Answer(400, "val must be a signed 64-bit integer")
        return name, value
    if name not in counters:
        raise _Answer(404, f"{name} not found")
    return name, counters[name]


def _write(path: str, name: str, value: int) -> str:
    """Finish the request from what :func:`_read` returned; the answer's text."""
    if path == "/set":
        counters[name] = value
        return "ok"
    if path == "/get":
        return f"{name}: {value}"
    if value >= INT64_MAX:
        raise _Answer(409, f"{name} would overflow int64")
    counters[name] = value + 1
    return "ok"


async def _guarded(path: str, method: str, params: dict[str, list[str]]) -> str:
    async with lock:  # the lock strategy's guard, step for step
        name, value = _read(path, method, params)
        await trio.sleep(0)  # the race window, closed by the lock
        return _write(path, name, value)


async def _unguarded(path: str, method: str, params: dict[str, list[str]]) -> str:
    # No await between read and write: atomic in trio, no lock needed.
    return _write(path, *_read(path, method, params))


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _asgi(handle: Any) -> Any:
    async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            status, text = 200, await handle(scope["path"], scope["method"], await _params(scope, receive))
        except _Answer as answer:
            status, text = answer.status, answer.text
        body = (text + "\n").encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return asgi_app


#: The ASGI entry points (see the module docstring).
app = _asgi(_guarded)
unguarded_app = _asgi(_unguarded)
