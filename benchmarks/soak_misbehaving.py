"""The soak's misbehaving clients (``python -m benchmarks.soak``).

Each method of :class:`Misbehaving` is one misbehaving connection -- idle, a
half-sent request, a slowloris, an unfinished POST body, garbage bytes, an
oversized request, an unknown path, a disconnect at some stage of an ``/inc`` --
checked against what the server must do with it, and booked in
:class:`benchmarks.soak_clients.Books`.
"""

from __future__ import annotations

import random

import trio

from trio_counters.testing import (
    HOST,
    TRANSPORT_ERRORS,
    Raw,
    abort,
    exchange,
    form_post_bytes,
    get_bytes,
    read_until_closed,
)

from .soak_clients import (
    BODY_TIMEOUT,
    BROKEN,
    DISRUPTED,
    H11_MAX_INCOMPLETE,
    MAX_BODY_BYTES,
    MAX_QUERY_BYTES,
    MAX_RECV,
    REQUEST_TIMEOUT,
    SLACK,
    Books,
)


class Misbehaving:
    """Each method is one misbehaving connection, checked against what the server must do."""

    def __init__(self, port: int, books: Books, keep_alive: float, rng: random.Random) -> None:
        self.port = port
        self.books = books
        self.keep_alive = keep_alive
        self.rng = rng

    async def _reaped(self, kind: str, data: bytes, *, interval: float = 0.0) -> None:
        """Send ``data`` (a byte per ``interval`` if given), never finish; the server
        must close the connection at its keep-alive deadline, without answering."""
        start = trio.current_time()
        stream = await trio.open_tcp_stream(HOST, self.port)
        async with stream:

            async def trickle() -> None:
                for byte in data:
                    try:
                        await stream.send_all(bytes([byte]))
                    except TRANSPORT_ERRORS:
                        return  # closed by the server: what we are waiting for
                    await trio.sleep(interval)

            with trio.move_on_after(self.keep_alive + SLACK) as deadline:
                if interval:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(trickle)
                        received = await read_until_closed(stream)
                        nursery.cancel_scope.cancel()
                else:
                    if data:
                        await stream.send_all(data)
                    received = await read_until_closed(stream)
        seconds = trio.current_time() - start
        if deadline.cancelled_caught:
            self.books.error(f"{kind}: not closed", f"still open after {seconds:.1f} s")
        elif received:
            self.books.error(f"{kind}: answered", repr(received[:60]))
        elif seconds < self.keep_alive - 0.05:
            self.books.error(f"{kind}: closed early", f"after {seconds:.2f} s")
        else:
            self.books.misbehaving[kind] += 1
            self.books.timings[kind].append(seconds)

    async def idle(self) -> None:
        await self._reaped("idle connection", b"")

    async def half_request(self) -> None:
        data = self.rng.choice(
            [
                b"GET /inc?na",
                b"GET /inc?name=soak-s-0 HTTP/1.1\r\n",
                b"GET /inc?name=soak-s-0 HTTP/1.1\r\nHost: x\r\nX-A: ",
            ]
        )
        await self._reaped("half-sent request", data)

    async def slowloris(self) -> None:
        head = b"GET /inc?name=soak-s-0 HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 200 + b"\r\n\r\n"
        await self._reaped("slowloris (a byte per 0.5 s)", head, interval=0.5)

    async def unfinished_body(self) -> None:
        kind = "unfinished POST body"
        stream = await trio.open_tcp_stream(HOST, self.port)
        start = trio.current_time()
        async with stream:
            await stream.send_all(form_post_bytes("/inc", b"name=soak-s-0&pad=", length=100))
            with trio.move_on_after(BODY_TIMEOUT + SLACK) as deadline:
                received = await read_until_closed(stream)
        if deadline.cancelled_caught or not received.startswith(b"HTTP/1.1 408"):
            self.books.error(f"{kind}: no 408", repr(received[:60]))
        else:
            self.books.statuses[408] += 1
            self.books.misbehaving[kind] += 1
            self.books.timings[kind].append(trio.current_time() - start)

    async def _refused(self, kind: str, data: bytes, allowed: set[int | None], deadline: float = SLACK) -> None:
        """Send ``data``; the answer must be one of ``allowed`` (None: closed without one)."""
        outcome = await exchange(self.port, data, deadline=deadline)
        if outcome.status is None and not outcome.closed:
            self.books.error(f"{kind}: hung", f"no answer or close within {deadline:g} s")
        elif outcome.status not in allowed:
            self.books.error(f"{kind}: got {outcome.status}", f"allowed {sorted(map(str, allowed))}")
        else:
            self.books.misbehaving[kind] += 1
            if outcome.status is not None:
                self.books.statuses[outcome.status] += 1

    async def garbage(self) -> None:
        rng = self.rng
        case = rng.randrange(5)
        if case == 0:
            await self._refused("garbage: text", b"HELLO SERVER\r\n\r\n", {400})
        elif case == 1:
            await self._refused("garbage: NUL bytes", b"\x00" * rng.randrange(1, 2048), {400})
        elif case == 2:
            await self._refused("garbage: bare CRLF CRLF", b"\r\n\r\n", {400})
        elif case == 3:  # may hold no line end: then only the keep-alive timer ends it
            await self._refused(
                "garbage: random bytes", rng.randbytes(rng.randrange(1, 4096)), {400, None},
                deadline=self.keep_alive + SLACK,
            )  # fmt: skip
        else:
            await self._refused(
                "garbage: bad Content-Length",
                b"POST /inc?name=soak-s-0 HTTP/1.1\r\nHost: x\r\nContent-Length: lots\r\n\r\n",
                {400},
            )

    async def oversized(self) -> None:
        rng = self.rng
        case = rng.randrange(5)
        if case == 0:
            await self._refused(
                "oversized: query string", get_bytes("/inc?name=soak-s-0&pad=" + "p" * MAX_QUERY_BYTES), {414}
            )
        elif case == 1:
            big = b"X-Big: " + b"b" * (MAX_RECV + 4096) + b"\r\n"
            data = b"GET /inc?name=soak-s-0 HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n"
            # hypercorn answers 431 after its first 64 KiB read and closes with the rest
            # unread, so the kernel may reset the connection before the answer is read.
            await self._refused("oversized: headers over 64 KiB", data, {431, None})
        elif case == 2:
            data = b"GET /inc?name=soak-s-0 HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * (H11_MAX_INCOMPLETE + 1024)
            await self._refused("oversized: unfinished head over 16 KiB", data, {431})
        elif case == 3:
            body = b"name=soak-s-0&pad=" + b"p" * MAX_BODY_BYTES
            await self._refused("oversized: form body", form_post_bytes("/inc", body), {413})
        else:
            await self._refused("unknown path", get_bytes(f"/x{rng.randrange(10**9)}"), {404})

    STAGES = (
        "connected, nothing sent",
        "mid request line",
        "mid headers",
        "mid form body",
        "whole request sent",
        "mid reply (status line read)",
        "two pipelined, first answer read",
    )

    async def disconnect(self) -> None:
        """An /inc of a disrupted counter, abandoned at a random stage (closed or reset)."""
        rng = self.rng
        name = rng.choice(DISRUPTED)
        request = get_bytes(f"/inc?name={name}")
        stage = rng.randrange(len(self.STAGES))
        kind = f"disconnect: {self.STAGES[stage]}"
        stream = await trio.open_tcp_stream(HOST, self.port)
        try:
            if stage == 0:  # connected, nothing sent
                pass
            elif stage == 1:  # mid request line
                await stream.send_all(request[: rng.randrange(1, 15)])
            elif stage == 2:  # mid headers
                await stream.send_all(request[: len(request) - 3])
            elif stage == 3:  # mid body: the name is in, the rest never comes
                body = f"name={name}&pad=never".encode()
                await stream.send_all(form_post_bytes("/inc", body[: len(name) + 5], length=len(body)))
            elif stage == 4:  # whole request, then gone
                self.books.sending_inc(name)
                await stream.send_all(request)
            elif stage == 5:  # whole request, status line read, then gone mid-reply
                self.books.sending_inc(name)
                await stream.send_all(request)
                received = bytearray()
                with trio.move_on_after(REQUEST_TIMEOUT):
                    while len(received) < 12:
                        chunk = await stream.receive_some(65536)
                        if not chunk:
                            break
                        received += chunk
                if received.startswith(b"HTTP/1.1 200"):
                    self.books.answered_inc(name, 200)
                elif received:
                    self.books.error("disconnect: unexpected answer", repr(bytes(received[:60])))
            else:  # two pipelined, gone after the first answer
                self.books.sending_inc(name)
                self.books.sending_inc(name)
                await stream.send_all(request + request)
                with trio.move_on_after(REQUEST_TIMEOUT):
                    response = await Raw(stream).response()
                    self.books.answered_inc(name, response.status)
                    if response.status != 200:
                        self.books.error("disconnect: unexpected answer", str(response.status))
            self.books.misbehaving[kind] += 1
        except BROKEN:
            self.books.misbehaving[kind] += 1
        finally:
            if rng.random() < 0.5:
                abort(stream)
            with trio.CancelScope(shield=True):
                await stream.aclose()
