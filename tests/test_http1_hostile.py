"""Hostile HTTP/1.1 against the real server, on both transports: answers that keep the
contract, connections that end, a shutdown that ends by its deadline.

- A WebSocket upgrade (the API has none) gets 400 and the connection is closed at once,
  whatever bytes follow the handshake: one more byte used to leave the connection, and
  its file descriptor, open for ever on the fast transport; a pipelined GET after it
  used to end the worker on the stock one.
- Content-Length with Transfer-Encoding gets 400 and a close (RFC 9112 section 6.1): a
  request smuggled inside the Content-Length-framed body used to be served.
- A request whose handling fails inside hypercorn (a Host header that is not UTF-8 when
  ``--server-name`` is set) closes that connection only, logged once; it used to end
  the worker.
- Clients that pipeline requests and never read cannot hold the worker past
  ``--graceful-timeout``: SIGTERM ends it within the timeout plus a second.
- A request still in flight at the graceful deadline (a body that never finished) gets
  no answer, only the close, the same on both transports (the fast one used to send an
  empty 500).
- A client that sends a whole request and then half-closes gets its answer, every time
  (it used to be a coin toss: the end of input was taken for a disconnect).
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio

from trio_counters.testing import (
    TRANSPORT_ERRORS,
    Raw,
    Server,
    exchange,
    form_post_bytes,
    get_bytes,
    read_until_closed,
    value_of,
)

StartServer = Callable[..., Awaitable[Server]]

#: A bound on any one wait for the server; a pass never comes near it.
PATIENCE = 10.0
#: How much past ``--graceful-timeout`` a shutdown may take.
PROMPT = 1.0
WEBSOCKET = (
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version: 13",
)
GUARD_LOG = "a connection's handling failed"


async def serve(start_server: StartServer, kind: str, *args: str) -> Server:
    return await start_server("lock", *args, env={"TRIO_COUNTERS_TRANSPORT": kind})


@pytest.mark.parametrize("after", [b"x", get_bytes("/inc?name=i")], ids=["one byte", "pipelined GET"])
async def test_websocket_upgrade_is_refused_and_closed(
    transport_kind: str, start_server: StartServer, after: bytes
) -> None:
    server = await serve(start_server, transport_kind)
    handshake = get_bytes("/inc?name=i", *WEBSOCKET)

    async def upgrade() -> None:
        outcome = await exchange(server.port, handshake + after, deadline=PATIENCE)
        assert (outcome.status, outcome.closed) == (400, True), outcome
        assert b"connection: close" in outcome.head.lower()

    with trio.fail_after(3 * PATIENCE):
        async with trio.open_nursery() as nursery:
            for _ in range(50):  # each closed, so none holds a file descriptor
                nursery.start_soon(upgrade)
    assert await value_of(server.port, "i") == 0  # neither the handshake nor the GET counted
    assert server.tracebacks() == []


async def test_content_length_with_transfer_encoding_is_refused_and_closed(
    transport_kind: str, start_server: StartServer
) -> None:
    server = await serve(start_server, transport_kind)
    body = b"0\r\n\r\n" + get_bytes("/inc?name=i")  # chunked: empty; by length: a smuggled /inc
    head = form_post_bytes("/set", b"", "Transfer-Encoding: chunked", length=len(body))
    with trio.fail_after(PATIENCE):
        async with await Raw.connect(server.port) as raw:
            await raw.send(head + body)
            response = await raw.response()
            assert (response.status, response.close) == (400, True), response
            assert b"Transfer-Encoding" in response.body
            assert await raw.closed() == b""  # the close, and no second answer
    assert await value_of(server.port, "i") == 0
    assert server.tracebacks() == []


async def test_a_failing_connection_is_closed_and_logged_once_and_the_worker_goes_on(
    transport_kind: str, start_server: StartServer
) -> None:
    # hypercorn decodes the Host header as UTF-8 when --server-name is set: a byte
    # that h11 lets through fails there, inside the connection's handling.
    server = await serve(start_server, transport_kind, "--server-name", "127.0.0.1")
    with trio.fail_after(PATIENCE):
        async with await Raw.connect(server.port) as bystander:
            await bystander.send(get_bytes("/inc?name=i"))
            assert (await bystander.response()).status == 200
            async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
                await stream.send_all(b"GET /inc?name=i HTTP/1.1\r\nHost: \xff\r\n\r\n")
                assert await read_until_closed(stream) == b""
            # Every other connection, the open one included, and the app go on.
            await bystander.send(get_bytes("/get?name=i"))
            assert (await bystander.response()).body == b"i: 1\n"
    assert server.process.returncode is None
    assert server.log.count(GUARD_LOG) == 1, server.log
    assert "UnicodeDecodeError" in server.log


def _server_side_queues(port: int, clients: set[int]) -> list[tuple[int, int]]:
    """(unsent, unread) bytes of the server's sockets for these client ports (Linux)."""
    queues = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = (int(address.rsplit(":", 1)[1], 16) for address in fields[1:3])
        if local == port and remote in clients:
            tx, rx = (int(queue, 16) for queue in fields[4].split(":"))
            queues.append((tx, rx))
    return queues


async def test_clients_that_pipeline_and_never_read_cannot_hold_the_shutdown(
    transport_kind: str, start_server: StartServer
) -> None:
    graceful = 2.0
    server = await serve(start_server, transport_kind, "--graceful-timeout", f"{graceful:g}")
    streams = []
    for _ in range(5):
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        streams.append(stream)
    clients = {stream.socket.getsockname()[1] for stream in streams}

    async def flood(stream: trio.SocketStream) -> None:
        try:
            while True:
                await stream.send_all(get_bytes("/get?name=i") * 1000)
        except TRANSPORT_ERRORS:
            pass  # closed at shutdown

    with trio.fail_after(graceful + 3 * PATIENCE):
        async with trio.open_nursery() as nursery:
            for stream in streams:
                nursery.start_soon(flood, stream)
            # Until, for every one of them, the server holds answers it cannot send and
            # requests it no longer reads, unchanged over several polls: its writes are
            # stuck.
            previous, steady = None, 0
            while steady < 4:
                queues = sorted(_server_side_queues(server.port, clients))
                stuck = len(queues) == len(clients) and all(tx and rx for tx, rx in queues)
                steady = steady + 1 if stuck and queues == previous else 0
                previous = queues
                await trio.sleep(0.05)
            signalled = trio.current_time()
            server.send_signal(signal.SIGTERM)
            code = await server.wait(graceful + PATIENCE)
            took = trio.current_time() - signalled
            nursery.cancel_scope.cancel()
    for stream in streams:
        await stream.aclose()
    assert code == 0, server.log
    assert took <= graceful + PROMPT, f"the worker took {took:.2f} s to exit"


async def test_a_request_in_flight_at_the_graceful_deadline_gets_a_plain_close(
    transport_kind: str, start_server: StartServer
) -> None:
    graceful = 1.0
    server = await serve(start_server, transport_kind, "--graceful-timeout", f"{graceful:g}")
    with trio.fail_after(graceful + PATIENCE):
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as stuck:
            await stuck.send_all(form_post_bytes("/inc", b"name=i", length=50))  # body never ends
            async with await Raw.connect(server.port) as idle:
                # The idle connection closes as shutdown begins: the stuck request is in.
                await idle.send(get_bytes("/get?name=i"))
                assert (await idle.response()).status == 200
                server.send_signal(signal.SIGTERM)
                assert await idle.closed() == b""
            assert await read_until_closed(stuck) == b""  # no 500, no answer at all
        assert await server.wait(PATIENCE) == 0, server.log


async def test_a_whole_request_then_a_half_close_is_always_answered(
    transport_kind: str, start_server: StartServer
) -> None:
    server = await serve(start_server, transport_kind)

    async def half_closed(data: bytes) -> bytes:
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
            await stream.send_all(data)
            await stream.send_eof()
            return await read_until_closed(stream)

    with trio.fail_after(3 * PATIENCE):
        for _ in range(20):
            answer = await half_closed(get_bytes("/inc?name=i"))
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"\r\n\r\nok\n"), answer
        for _ in range(5):  # pipelined, then the half-close: both answered, in order
            answer = await half_closed(get_bytes("/inc?name=j") + form_post_bytes("/inc", b"name=j"))
            assert answer.count(b"HTTP/1.1 200") == 2 and answer.endswith(b"ok\n"), answer
        # A body cut short by the half-close is refused, and never applied.
        answer = await half_closed(form_post_bytes("/inc", b"name=i", length=50))
        assert answer.startswith(b"HTTP/1.1 400"), answer
    assert (await value_of(server.port, "i"), await value_of(server.port, "j")) == (20, 10)
    assert server.tracebacks() == []


async def test_half_closed_clients_under_load_are_each_answered_once(
    transport_kind: str, start_server: StartServer
) -> None:
    server = await serve(start_server, transport_kind)
    answered = 0

    async def client() -> None:
        nonlocal answered
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
            await stream.send_all(get_bytes("/inc?name=i"))
            await stream.send_eof()
            answer = await read_until_closed(stream)
        answered += answer.endswith(b"\r\n\r\nok\n")

    with trio.fail_after(3 * PATIENCE):
        async with trio.open_nursery() as nursery:
            for _ in range(100):
                nursery.start_soon(client)
    assert answered == 100
    assert await value_of(server.port, "i") == 100

