"""End to end: the real ``hypercorn --worker-class trio`` process, spoken to over sockets.

Each test gets a fresh server per strategy on a free loopback port (see the
``server`` fixture in conftest.py). Nothing here sleeps to wait for a server.
"""

from __future__ import annotations

import json
import signal

import pytest
import trio

from client import Connection, request
from conftest import SAFE_STRATEGIES
from hypercorn_process import Server, run_hypercorn

#: Generous bounds for a loaded 2-core machine; a pass never waits for them.
PROMPT = 5


async def value_of(server: Server, name: str = "i") -> int:
    reply = await request(server.port, f"/get?name={name}")
    assert reply.status == 200, reply
    return int(reply.body.split(": ")[1])


async def test_seed_curl_transcript(server: Server) -> None:
    transcript = [
        ("/set?name=x&val=0", "ok\n"),
        ("/get?name=x", "x: 0\n"),
        ("/inc?name=x", "ok\n"),
        ("/get?name=x", "x: 1\n"),
    ]
    for target, body in transcript:
        reply = await request(server.port, target)
        assert (reply.status, reply.body) == (200, body)
        assert reply.headers["content-type"] == "text/plain; charset=utf-8"


async def test_refusals_over_the_wire(server: Server) -> None:
    assert (await request(server.port, "/inc?name=nope")).status == 404
    assert (await request(server.port, "/set?name=x&val=1.5")).status == 400
    assert (await request(server.port, "/set?name=x&val=1", method="PUT")).status == 405
    assert await value_of(server) == 0


async def hammer(port: int, *, connections: int, requests_each: int) -> int:
    """Increment i over many keep-alive connections at once; the number of 200s."""
    ok = 0

    async def one_client() -> None:
        nonlocal ok
        async with await Connection.open(port) as connection:
            for _ in range(requests_each):
                reply = await connection.request("/inc?name=i")
                assert reply.status == 200, reply
                ok += 1

    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(one_client)
    return ok


async def test_concurrent_hammer_is_exact_for_safe_strategies(server: Server, strategy: str) -> None:
    with trio.fail_after(60):
        acknowledged = await hammer(server.port, connections=200, requests_each=10)
    assert acknowledged == 2000
    final = await value_of(server)
    if strategy == "naive":
        assert final < acknowledged  # the race, over real sockets
    else:
        assert final == acknowledged


async def _read_until_eof(stream: trio.SocketStream) -> bytes:
    received = bytearray()
    while chunk := await stream.receive_some(65536):
        received += chunk
    return bytes(received)


@pytest.mark.parametrize(
    "raw_request",
    [
        b"GET /inc?name=i HTTP/1.0\r\n\r\n",  # what ab sends
        b"GET /inc?name=i HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ],
    ids=["http1.0", "connection-close"],
)
async def test_response_that_must_close_is_followed_by_eof(server: Server, raw_request: bytes) -> None:
    # The stack defect fixed in trio_counters/connection.py: without the fix the
    # full response arrives but the socket stays open forever.
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        await stream.send_all(raw_request)
        with trio.fail_after(PROMPT):
            received = await _read_until_eof(stream)
    assert received.startswith(b"HTTP/1.1 200")
    assert received.endswith(b"\r\n\r\nok\n")
    assert await value_of(server) == 1


@pytest.mark.parametrize("strategy", ["lock"])
async def test_idle_keep_alive_connection_is_closed_after_keep_alive_timeout(
    nursery: trio.Nursery, strategy: str
) -> None:
    server: Server = await nursery.start(
        lambda task_status: run_hypercorn(args=["--keep-alive", "1"], task_status=task_status)
    )
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        await stream.send_all(b"GET /get?name=i HTTP/1.1\r\nHost: x\r\n\r\n")
        start = trio.current_time()
        with trio.fail_after(PROMPT):
            received = await _read_until_eof(stream)
        assert trio.current_time() - start >= 0.9  # kept alive first...
    assert received.endswith(b"i: 0\n")  # ...then reaped once idle


async def test_ab_style_load_completes_without_failures(server: Server, strategy: str) -> None:
    """The seed's ab run, scaled down: 200 clients, each request on a new
    HTTP/1.0 connection that the server must close. Before the close fix this
    stalled after the first 200 requests."""
    n, concurrency = 4000, 200
    statuses: list[int] = []

    async def ab_client(count: int) -> None:
        for _ in range(count):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with stream:
                await stream.send_all(b"GET /inc?name=i HTTP/1.0\r\n\r\n")
                response = await _read_until_eof(stream)
            statuses.append(int(response.split(b" ", 2)[1]))

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(ab_client, n // concurrency)
    assert statuses == [200] * n
    final = await value_of(server)
    stats = json.loads((await request(server.port, "/stats")).body)
    if strategy == "naive":
        assert final < n
        # The server knows exactly what it lost, like a race detector with a count.
        assert stats["race"]["lost_updates"] == n - final
    else:
        assert final == n
        assert stats["race"] is None
    assert stats["requests"]["served"]["/inc"] == n


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("strategy", SAFE_STRATEGIES)
async def test_signal_under_load_exits_cleanly_within_graceful_timeout(
    server: Server, sig: signal.Signals
) -> None:
    answered = 0
    errors = 0

    async def client() -> None:
        nonlocal answered, errors
        try:
            async with await Connection.open(server.port) as connection:
                while True:
                    reply = await connection.request("/inc?name=i")
                    assert reply.status in (200, 503), reply
                    answered += reply.status == 200
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            errors += 1  # the server closed this connection as it shut down

    with trio.fail_after(30):  # no client may hang on a server that is going away
        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(client)
            while answered < 500:
                await trio.sleep(0.01)
            server.process.send_signal(sig)
            code = await server.wait(timeout=3 + PROMPT)  # hypercorn's graceful timeout is 3 s
    assert code == 0, server.log
    assert errors == 50  # every client saw its connection end
    assert "Traceback" not in server.log, server.log
