"""The trio transport over the wire: every behaviour a client sees, on both transports.

Each test starts the real ``hypercorn --worker-class trio trio_counters:app`` with
``TRIO_COUNTERS_TRANSPORT`` set to ``stock`` or ``fast`` and talks to it over raw
sockets, so that what is checked is the bytes and the closes a client sees:
keep-alive and pipelining, idle reaping, closes after HTTP/1.0 and
``Connection: close``, the read timeout, graceful shutdown, h2c, and closes that
never swallow a new connection's request. (A small ASGI app served in-process:
test_transport_in_process.py; the version pin and the setting:
test_transport_setting.py.)
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable

import h2.config
import h2.connection
import h2.events
import pytest
import trio

from trio_counters.app import BODY_TIMEOUT
from trio_counters.testing import Raw, Server, form_post_bytes, get_bytes, value_of

StartServer = Callable[..., Awaitable[Server]]

#: Only guards against a hang: a pass never comes near it, and no assertion depends
#: on how fast a shared machine is.
HANG = 30.0


async def serve(start_server: StartServer, kind: str, *args: str) -> Server:
    """hypercorn's trio worker serving trio_counters:app with the ``kind`` transport."""
    return await start_server(None, *args, env={"TRIO_COUNTERS_TRANSPORT": kind})


async def closes_within(raw: Raw, seconds: float) -> float:
    """Wait for the server to close ``raw``; fail past ``seconds``. How long it took."""
    start = trio.current_time()
    with trio.fail_after(seconds):
        await raw.closed()
    return trio.current_time() - start


# --- keep-alive ---------------------------------------------------------------


async def test_keep_alive_reuses_one_connection(transport_kind: str, start_server: StartServer) -> None:
    """Many requests on one connection, pipelined ones and a 100-continue included."""
    server = await serve(start_server, transport_kind)
    raw = await Raw.connect(server.port)
    with trio.fail_after(HANG):
        for _ in range(50):
            await raw.send(get_bytes("/inc?name=i"))
            assert (await raw.response()).body == b"ok\n"
        # Pipelined: three requests in one write, three answers in order.
        await raw.send(get_bytes("/inc?name=i") * 2 + get_bytes("/get?name=i"))
        assert [(await raw.response()).body for _ in range(3)] == [b"ok\n", b"ok\n", b"i: 52\n"]
        # Expect: 100-continue: the interim answer must come while the app
        # waits for the body -- nothing may be held back then.
        body = b"name=i&val=7"
        await raw.send(form_post_bytes("/set", b"", "Expect: 100-continue", length=len(body)))
        assert (await raw.response()).status == 100
        await raw.send(body)
        assert (await raw.response()).body == b"ok\n"
        await raw.send(get_bytes("/get?name=i"))
        assert (await raw.response()).body == b"i: 7\n"
    await raw.aclose()


async def test_idle_connections_are_reaped_and_activity_moves_the_deadline(
    transport_kind: str, start_server: StartServer
) -> None:
    keep_alive = 2.0
    server = await serve(start_server, transport_kind, "--keep-alive", f"{keep_alive:g}")

    async def reaped_after_one_request() -> None:
        raw = await Raw.connect(server.port)
        await raw.send(get_bytes("/inc?name=i"))
        assert (await raw.response()).status == 200
        waited = await closes_within(raw, keep_alive + HANG)
        assert waited >= keep_alive * 0.9, f"closed after {waited:.2f} s, before the keep-alive"

    async def kept_while_active() -> None:
        # Requests spaced well inside the keep-alive, for twice its length: the
        # deadline must move with each response, or the connection dies midway.
        raw = await Raw.connect(server.port)
        start = trio.current_time()
        while trio.current_time() - start < 2 * keep_alive:
            await raw.send(get_bytes("/inc?name=j"))
            assert (await raw.response()).status == 200
            await trio.sleep(keep_alive / 4)
        await closes_within(raw, keep_alive + HANG)

    async def reaped_without_any_request() -> None:
        raw = await Raw.connect(server.port)
        await closes_within(raw, keep_alive + HANG)

    async with trio.open_nursery() as clients:
        clients.start_soon(reaped_after_one_request)
        clients.start_soon(kept_while_active)
        clients.start_soon(reaped_without_any_request)


async def test_200_keep_alive_connections_count_exactly(transport_kind: str, start_server: StartServer) -> None:
    server = await serve(start_server, transport_kind)
    connections, each = 200, 15
    answered = 0

    async def client() -> None:
        nonlocal answered
        raw = await Raw.connect(server.port)
        for _ in range(each):
            await raw.send(get_bytes("/inc?name=i"))
            response = await raw.response()  # EOFError if the server dropped it
            assert (response.status, response.body) == (200, b"ok\n")
            answered += 1
        await raw.aclose()

    with trio.fail_after(60):
        async with trio.open_nursery() as clients:
            for _ in range(connections):
                clients.start_soon(client)
    assert answered == connections * each
    assert await value_of(server.port, "i") == connections * each


# --- closing ------------------------------------------------------------------


async def test_http10_and_connection_close_close_promptly(
    transport_kind: str, start_server: StartServer
) -> None:
    """Closed by the server right after the answer, not by the (long) idle timer."""
    keep_alive = 60.0
    server = await serve(start_server, transport_kind, "--keep-alive", f"{keep_alive:g}")
    requests = [get_bytes("/inc?name=i", version="1.0")] * 20 + [
        get_bytes("/inc?name=i", "Connection: close")
    ] * 20
    for request in requests:
        raw = await Raw.connect(server.port)
        await raw.send(request)
        await closes_within(raw, keep_alive / 2)  # by the server, well before its idle timer
        answer = bytes(raw.buffer)
        assert answer.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")), answer
        assert answer.endswith(b"\r\n\r\nok\n"), answer
        await raw.aclose()
    # A request hypercorn refuses (h11 cannot parse it, or it is too large) is
    # answered with an error and closed by hypercorn itself; the server goes on.
    for refused, status in ((b"NOT HTTP AT ALL\r\n\r\n", b"400"), (get_bytes("/" + "x" * 70000), b"431")):
        raw = await Raw.connect(server.port)
        await raw.send(refused)
        await closes_within(raw, keep_alive / 2)
        assert bytes(raw.buffer).startswith(b"HTTP/1.1 " + status), bytes(raw.buffer)[:40]
    assert await value_of(server.port, "i") == 40


async def test_read_timeout(transport_kind: str, start_server: StartServer) -> None:
    """A request that stops half-way is dropped at --read-timeout.

    The half-sent *headers* case also tells the two transports apart, which
    proves that TRIO_COUNTERS_TRANSPORT reached the served process: hypercorn's
    own TCPServer keeps that socket until its idle timer (--keep-alive) fires,
    because the timer task outlives the read loop; ours ends both together.
    """
    read_timeout, keep_alive = 1.0, 30.0
    server = await serve(
        start_server, transport_kind, "--read-timeout", f"{read_timeout:g}", "--keep-alive", f"{keep_alive:g}"
    )

    async def half_body() -> None:
        raw = await Raw.connect(server.port)
        await raw.send(form_post_bytes("/set", b"", length=20) + b"name=")
        waited = await closes_within(raw, keep_alive / 2)
        assert waited >= read_timeout * 0.9

    async def half_headers() -> None:
        raw = await Raw.connect(server.port)
        await raw.send(b"GET /get?name=i HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        if transport_kind == "fast":
            waited = await closes_within(raw, keep_alive / 2)
            assert waited >= read_timeout * 0.9
        else:
            with trio.move_on_after(3 * read_timeout):
                await raw.closed()
                pytest.fail("the stock transport closed at the read timeout: is it the fast one?")
        await raw.aclose()

    async with trio.open_nursery() as clients:
        clients.start_soon(half_body)
        clients.start_soon(half_headers)
    assert await value_of(server.port, "i") == 0


# --- shutdown -----------------------------------------------------------------


async def in_flight(port: int, body: bytes) -> Raw:
    """A POST whose body the app is waiting for: the 100 Continue says it got that far."""
    raw = await Raw.connect(port)
    await raw.send(form_post_bytes("/set", b"", "Expect: 100-continue", length=len(body)))
    with trio.fail_after(HANG):
        assert (await raw.response()).status == 100
    return raw


async def test_sigterm_finishes_the_request_in_flight_then_exits_0(
    transport_kind: str, start_server: StartServer
) -> None:
    graceful = 2.0
    server = await serve(start_server, transport_kind, "--graceful-timeout", f"{graceful:g}")
    idle = await Raw.connect(server.port)
    await idle.send(get_bytes("/inc?name=i"))
    assert (await idle.response()).status == 200
    body = b"name=i&val=41"
    busy = await in_flight(server.port, body)
    stuck_sent = trio.current_time()
    stuck = await in_flight(server.port, body)  # its body never comes

    server.send_signal(signal.SIGTERM)
    # Shutdown has begun once the idle connection is closed...
    await closes_within(idle, HANG)
    # ...and the request in flight still completes, then its connection closes.
    await busy.send(body)
    with trio.fail_after(HANG):
        response = await busy.response()
    assert (response.status, response.body) == (200, b"ok\n")
    await closes_within(busy, HANG)
    # The stuck one is given up at the graceful timeout, and the process exits: both
    # before the app's own body timeout would have ended that request, so it was the
    # graceful timeout that did.
    await closes_within(stuck, HANG)
    assert await server.wait(HANG) == 0, server.log
    assert trio.current_time() < stuck_sent + BODY_TIMEOUT


# --- h2c ----------------------------------------------------------------------


async def test_h2c_upgrade_then_h2_requests(transport_kind: str, start_server: StartServer) -> None:
    server = await serve(start_server, transport_kind)
    raw = await Raw.connect(server.port)
    h2conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    settings = h2conn.initiate_upgrade_connection()
    assert settings is not None
    await raw.send(
        get_bytes(
            "/inc?name=i",
            "Connection: Upgrade, HTTP2-Settings",
            "Upgrade: h2c",
            "HTTP2-Settings: " + settings.decode(),
        )
    )
    with trio.fail_after(HANG):
        assert (await raw.response()).status == 101
        await raw.send(h2conn.data_to_send())
        leftover, raw.buffer = bytes(raw.buffer), bytearray()

        async def answer(stream_id: int, data: bytes) -> tuple[bytes, bytes]:
            status, body = b"", b""
            while True:
                for event in h2conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream_id:
                        status = dict(event.headers)[b":status"]
                    elif isinstance(event, h2.events.DataReceived) and event.stream_id == stream_id:
                        body += event.data
                        h2conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
                    elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream_id:
                        await raw.send(h2conn.data_to_send())
                        return status, body
                await raw.send(h2conn.data_to_send())
                data = await raw.stream.receive_some(65536)
                assert data, "closed in the middle of an h2 response"

        assert await answer(1, leftover) == (b"200", b"ok\n")
        for stream_id in (3, 5):
            h2conn.send_headers(
                stream_id,
                [
                    (b":method", b"GET"),
                    (b":path", b"/inc?name=i"),
                    (b":scheme", b"http"),
                    (b":authority", b"127.0.0.1"),
                ],
                end_stream=True,
            )
            await raw.send(h2conn.data_to_send())
            assert await answer(stream_id, b"") == (b"200", b"ok\n")
    await raw.aclose()
    assert await value_of(server.port, "i") == 3


async def test_connections_closed_by_the_server_never_take_a_new_ones_data(
    transport_kind: str, start_server: StartServer
) -> None:
    """Closes and new connections interleaved: each new one is answered.

    A closed socket's file descriptor number is reused by the next accepted
    connection at once, so a reader that woke for the old connection must not
    read through the number after its socket was closed: the new connection's
    request would vanish, and the client wait until the idle timeout.
    """
    server = await serve(start_server, transport_kind, "--keep-alive", "30")
    answered = 0

    async def closing() -> None:
        # Refused before its body is read (413), so hypercorn closes the
        # connection from the app's task, while the body still streams in and
        # keeps waking the reading task.
        raw = await Raw.connect(server.port)
        await raw.send(form_post_bytes("/set", b"", length=1_000_000))
        with trio.move_on_after(HANG):
            try:
                while True:
                    await raw.send(b"x" * 1000)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        await closes_within(raw, HANG)
        assert bytes(raw.buffer).startswith(b"HTTP/1.1 413")
        await raw.aclose()

    async def fresh() -> None:
        nonlocal answered
        raw = await Raw.connect(server.port)
        await raw.send(get_bytes("/inc?name=i"))
        with trio.fail_after(HANG):
            assert (await raw.response()).body == b"ok\n"
        answered += 1
        await raw.aclose()

    rounds, width = 40, 10
    for _ in range(rounds):
        async with trio.open_nursery() as clients:
            for _ in range(width):
                clients.start_soon(closing)
                clients.start_soon(fresh)
    assert answered == rounds * width
    assert await value_of(server.port, "i") == rounds * width
