"""Idle, half-sent and slow clients, end to end: the real hypercorn process keeps
serving everyone else, and reaps them at the keep-alive timeout.

Hundreds of idle connections, request heads cut off at every point, a slowloris
sending a byte at a time, and connections left idle after one answer do not hold up
a well-behaved client, and each is closed, without an answer, once the keep-alive
timeout has passed: hypercorn's timer is a deadline for the whole request head, not
reset by each byte. A request whose head is complete but whose body never comes is
answered 408 by the app's own body timeout.

Pacing a client (the slowloris, the witness) is the only use of sleep here.
The test prints what it measured (``pytest -s`` shows it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from trio_counters.app import BODY_TIMEOUT
from trio_counters.testing import (
    TRANSPORT_ERRORS,
    Server,
    form_post_bytes,
    get_bytes,
    read_until_closed,
    value_of,
)
from trio_counters.testing.checks import Witness, assert_no_tracebacks

StartServer = Callable[..., Awaitable[Server]]

#: ``--keep-alive`` in seconds: short, so that reaping is seen within the test.
KEEP_ALIVE = 2
#: Only guards against a hang: a pass never comes near it.
HANG = 30

HALF_SENT: list[tuple[str, bytes]] = [
    ("half a request line", b"GET /inc?na"),
    ("request line, no headers yet", b"GET /inc?name=i HTTP/1.1\r\n"),
    ("headers without the blank line", b"GET /inc?name=i HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n"),
    ("half a header", b"GET /inc?name=i HTTP/1.1\r\nHost: x\r\nX-A: "),
    ("a lone CR", b"GET /inc?name=i HTTP/1.1\r\nHost: x\r\n\r"),
]
#: A slowloris' request head: sent a byte at a time, it takes over 100 intervals.
SLOW_HEAD = b"GET /inc?name=i HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 100 + b"\r\n\r\n"


async def test_idle_and_half_sent_connections_do_not_block_others_and_are_reaped(
    start_server: StartServer,
) -> None:
    server = await start_server("lock", "--keep-alive", str(KEEP_ALIVE))
    witness = Witness(server.port)
    closed_after: dict[str, list[float]] = {}
    slowloris_bytes: list[int] = []
    body_timeouts: list[tuple[bytes, float]] = []

    # Each clock starts before the connect: with hundreds of connects at once, this
    # task may resume well after the server has accepted and armed its timer.
    async def hold(kind: str, data: bytes) -> None:
        start = trio.current_time()
        async with await trio.open_tcp_stream(server.host, server.port) as stream:
            if data:
                await stream.send_all(data)
            received = await read_until_closed(stream)
        closed_after.setdefault(kind, []).append(trio.current_time() - start)
        assert received == b"", (kind, received)  # closed without an answer

    async def keep_alive_then_idle() -> None:
        async with await trio.open_tcp_stream(server.host, server.port) as stream:
            start = trio.current_time()  # the server arms its timer after it answers
            await stream.send_all(get_bytes("/get?name=i"))
            first = await stream.receive_some(65536)
            await read_until_closed(stream)
        assert first.startswith(b"HTTP/1.1 200"), first
        closed_after.setdefault("idle after one answered request", []).append(trio.current_time() - start)

    async def slowloris(interval: float) -> None:
        start = trio.current_time()
        stream = await trio.open_tcp_stream(server.host, server.port)
        sent = 0

        async def trickle() -> None:
            nonlocal sent
            for byte in SLOW_HEAD:
                try:
                    await stream.send_all(bytes([byte]))
                except TRANSPORT_ERRORS:
                    return
                sent += 1
                await trio.sleep(interval)  # the pace of a slowloris, on purpose

        async with stream:
            async with trio.open_nursery() as inner:
                inner.start_soon(trickle)
                received = await read_until_closed(stream)
                inner.cancel_scope.cancel()
        closed_after.setdefault(f"slowloris, a byte every {interval:g} s", []).append(
            trio.current_time() - start
        )
        slowloris_bytes.append(sent)
        assert received == b"", received

    async def half_body() -> None:
        # The head is complete, so hypercorn's keep-alive timer stops; the app's own
        # body timeout answers 408.
        start = trio.current_time()
        async with await trio.open_tcp_stream(server.host, server.port) as stream:
            await stream.send_all(form_post_bytes("/inc", b"name=i&pad=", length=100))
            received = await read_until_closed(stream)
        body_timeouts.append((received.split(b"\r\n", 1)[0], trio.current_time() - start))

    with trio.fail_after(BODY_TIMEOUT + HANG):
        async with trio.open_nursery() as clients:
            await clients.start(witness.run)
            async with trio.open_nursery() as abusers:
                for _ in range(300):
                    abusers.start_soon(hold, "idle, nothing sent", b"")
                for kind, data in HALF_SENT:
                    for _ in range(10):
                        abusers.start_soon(hold, kind, data)
                for _ in range(5):
                    abusers.start_soon(keep_alive_then_idle)
                    abusers.start_soon(slowloris, 1.0)
                    abusers.start_soon(slowloris, 0.1)
                for _ in range(3):
                    abusers.start_soon(half_body)
            clients.cancel_scope.cancel()

    for kind, seconds in closed_after.items():
        print(f"{kind}: {len(seconds)} closed by the server after {min(seconds):.2f}-{max(seconds):.2f} s")
    print(f"slowloris bytes sent before the close: {sorted(slowloris_bytes)}")
    print(f"unfinished bodies: {body_timeouts}")
    # Had the idle connections held the server up, the witness would have waited until
    # they were reaped, KEEP_ALIVE seconds after they connected: every answer came
    # before that.
    print(witness.check(minimum=100, below=KEEP_ALIVE))
    assert len(closed_after["idle, nothing sent"]) == 300
    for kind, seconds in closed_after.items():
        # Reaped by hypercorn's keep-alive timer: not before it, and before BODY_TIMEOUT,
        # when the half bodies (which that timer does not cover) are still open -- so
        # not by anything that ends the test.
        assert KEEP_ALIVE - 0.05 <= min(seconds) and max(seconds) < BODY_TIMEOUT, (kind, seconds)
    # The timer is a deadline for the whole request head, not reset by each byte:
    # the slowloris is cut at KEEP_ALIVE seconds, far from the end of its head.
    assert max(slowloris_bytes) < 100
    assert len(body_timeouts) == 3
    for status_line, seconds in body_timeouts:
        # Only the app's body timeout answers 408: not before it (the fail_after above
        # bounds it from above).
        assert status_line.startswith(b"HTTP/1.1 408"), status_line
        assert BODY_TIMEOUT - 0.05 <= seconds, seconds
    assert await value_of(server.port, "i") == 0  # no half request counted
    assert_no_tracebacks(server)
