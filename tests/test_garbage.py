"""Bytes that are not HTTP, end to end: the real hypercorn process answers them with a
4xx or a close, never a hang, and keeps serving everyone else.

Plain text, binary junk, a TLS ClientHello, malformed request lines, headers and
bodies each get a refusal (or just a close) while a well-behaved client keeps
asking, unhindered, and the very next client is served. An HTTP/2 prior-knowledge
preface, which hypercorn takes up on the plain port, escapes the keep-alive timer;
``--read-timeout`` still closes it.

Each test prints what it measured (``pytest -s`` shows it).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import pytest
import trio

from trio_counters.config import SAFE_STRATEGIES
from trio_counters.testing import Outcome, Server, exchange, read_until_closed, request, value_of
from trio_counters.testing.checks import Witness, assert_no_tracebacks

StartServer = Callable[..., Awaitable[Server]]

#: ``--keep-alive`` for the garbage test, in seconds: short, so junk that never ends a
#: line (which only the keep-alive timer closes) is closed within the test.
KEEP_ALIVE = 2
#: Only guards against a hang: a pass never comes near it.
HANG = 30

_RANDOM = random.Random(4)
_FORM = b"Content-Type: application/x-www-form-urlencoded\r\n"
GARBAGE: list[tuple[str, bytes]] = [
    ("plain text", b"HELLO SERVER, PLEASE INCREMENT i\r\n\r\n"),
    ("binary junk", _RANDOM.randbytes(4096)),
    ("NUL bytes", b"\x00" * 1024),
    ("bare CRLF CRLF", b"\r\n\r\n"),
    ("TLS ClientHello", bytes.fromhex("16030100f4010000f00303") + _RANDOM.randbytes(240)),
    ("HTTP/1.1 without Host", b"GET /inc?name=i HTTP/1.1\r\n\r\n"),
    ("header line without colon", b"GET /inc?name=i HTTP/1.1\r\nHost: x\r\nnot a header\r\n\r\n"),
    ("space in the target", b"GET /inc?name=i j HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("non-ASCII method", b"G\xc9T /inc?name=i HTTP/1.1\r\nHost: x\r\n\r\n"),
    # RFC 9110 5.5: a NUL or a bare CR in a field value must be refused. (Other control
    # bytes, \x01 or \x7f, h11 lets through, and the request is served.)
    ("NUL in a header value", b"GET /inc?name=i HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n"),
    ("bare CR in a header value", b"GET /inc?name=i HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n"),
    ("Content-Length: lots", b"POST /inc?name=i HTTP/1.1\r\nHost: x\r\nContent-Length: lots\r\n\r\n"),
    (
        "two Content-Lengths",
        b"POST /inc?name=i HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy",
    ),
    (
        "broken chunk",
        b"POST /inc HTTP/1.1\r\nHost: x\r\n" + _FORM
        + b"Transfer-Encoding: chunked\r\n\r\nZZ\r\nname=i\r\n0\r\n\r\n",
    ),
    ("unknown transfer coding", b"POST /inc?name=i HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"),
]  # fmt: skip
#: The one refusal that is not a 4xx: RFC 9112 6.1 says a transfer coding the server
#: does not know SHOULD get 501 Not Implemented, and h11 follows it.
EXPECTED_5XX = {"unknown transfer coding": 501}


@pytest.mark.parametrize("strategy", SAFE_STRATEGIES)
async def test_garbage_gets_400_or_a_close_and_everyone_else_is_served(
    start_server: StartServer, strategy: str
) -> None:
    server = await start_server(strategy, "--keep-alive", str(KEEP_ALIVE))
    witness = Witness(server.port)
    outcomes: dict[str, list[Outcome]] = {}
    next_client: list[int] = []

    async def one(case_id: str, raw: bytes) -> None:
        outcomes.setdefault(case_id, []).append(await exchange(server.port, raw, deadline=HANG))
        # The very next client is served.
        next_client.append((await request(server.port, "/get?name=j")).status)

    with trio.fail_after(2 * HANG):
        async with trio.open_nursery() as clients:
            await clients.start(witness.run)
            async with trio.open_nursery() as garbage:
                for _ in range(3):  # each case three times at once, while the witness asks
                    for case_id, raw in GARBAGE:
                        garbage.start_soon(one, case_id, raw)
            clients.cancel_scope.cancel()
        for case_id, _ in GARBAGE:
            print(f"{strategy}: {case_id}: {'; '.join(map(str, outcomes[case_id]))}")
        for case_id, _ in GARBAGE:
            for outcome in outcomes[case_id]:
                # A refusal (4xx) and the connection closed, or just closed: never an
                # answer that counts, never a server error, never a hang. (Junk with no line
                # end in it waits for more, so only the keep-alive timer closes it.)
                assert (
                    outcome.status is None
                    or 400 <= outcome.status < 500
                    or outcome.status == EXPECTED_5XX.get(case_id)
                ), (case_id, outcome)
                assert outcome.closed, (case_id, outcome)
        assert next_client == [200] * 3 * len(GARBAGE)
        # Had the garbage held the server up, the witness would have waited until the
        # junk was reaped by the keep-alive timer: every answer came before that.
        print(witness.check(minimum=20, below=KEEP_ALIVE))
        assert await value_of(server.port, "i") == 0  # every garbage /inc changed nothing
    assert_no_tracebacks(server)


async def test_h2c_preface_escapes_the_keep_alive_timer_but_not_read_timeout(
    start_server: StartServer,
) -> None:
    """An HTTP/2 prior-knowledge preface on the plain port makes hypercorn switch to h2
    and stop the keep-alive timer, which only an HTTP/1.1 answer re-arms: such a
    connection is never reaped by ``--keep-alive``. hypercorn's ``--read-timeout``
    closes it. (Measured without it: still open after 30 s.)"""
    read_timeout = 1
    # A keep-alive far beyond the read timeout: a close before it is the read timeout's.
    keep_alive = HANG
    server = await start_server(
        "lock", "--keep-alive", str(keep_alive), "--read-timeout", str(read_timeout)
    )
    with trio.fail_after(keep_alive):
        start = trio.current_time()
        async with await trio.open_tcp_stream(server.host, server.port) as stream:
            await stream.send_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            received = await read_until_closed(stream)
        seconds = trio.current_time() - start
    print(f"h2c preface: {len(received)} bytes of h2 frames, then closed after {seconds:.2f} s")
    assert received[3:4] == b"\x04"  # the server's h2 SETTINGS frame: it did switch to h2
    assert read_timeout <= seconds < keep_alive  # closed by the read timeout, not the keep-alive
    assert_no_tracebacks(server)
