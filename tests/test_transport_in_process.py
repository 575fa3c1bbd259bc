"""The trio transport in this process: hypercorn's ``worker_serve`` with the stock or
the fast ``TCPServer``, serving small ASGI apps that the real app cannot stand in for.

A streamed body and a response head are never held back while the app waits; the
fast transport closes after HTTP/1.0 and ``Connection: close`` even for a plain
QuartTrio app without trio_counters' close fix; and that fix (``CompleteSends``)
shields sends on the stock transport and steps aside on the fast one. A write that
meets the connection's close is a write to a closed connection.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable
from functools import partial
from typing import Any

import hypercorn.trio.run as run_module
import pytest
import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config
from hypercorn.events import Closed, RawData
from hypercorn.trio.tcp_server import TCPServer as StockTCPServer
from hypercorn.trio.worker_context import WorkerContext
from quart_trio import QuartTrio

from trio_counters.connection import CompleteSends
from trio_counters.testing import HOST, Raw, get_bytes
from trio_counters.transport import FastTCPServer, GuardedTCPServer
from trio_counters.transport.guarded import LOGGED_TRACEBACK, bounded_traceback
from trio_counters.transport.worker import waiting_connections
from trio_counters.transport.worker import worker_serve as batched_worker_serve

#: Only guards against a hang: a pass never comes near it.
HANG = 30.0


async def serve_in_process(
    nursery: trio.Nursery, app: Any, tcp_server: type, **settings: Any
) -> int:
    """hypercorn's trio worker_serve, in this process, with ``tcp_server``; its port."""
    run_module.TCPServer = tcp_server  # restored by the fixture below
    config = Config()
    config.bind = [f"{HOST}:0"]
    for name, value in settings.items():
        setattr(config, name, value)
    binds = await nursery.start(partial(run_module.worker_serve, ASGIWrapper(app), config))
    return int(binds[0].rsplit(":", 1)[1])


async def answer_lifespan(receive: Any, send: Any) -> None:
    """The lifespan protocol for the bare test apps below: nothing to start or stop."""
    while (await receive())["type"] != "lifespan.shutdown":
        await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})


@pytest.fixture
def restore_tcp_server(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], type]:
    monkeypatch.setattr(run_module, "TCPServer", run_module.TCPServer)
    return lambda kind: FastTCPServer if kind == "fast" else StockTCPServer


async def test_streamed_body_is_not_held_while_the_app_waits(
    transport_kind: str, nursery: trio.Nursery, restore_tcp_server: Callable[[str], type]
) -> None:
    first_seen = trio.Event()

    async def streaming(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await first_seen.wait()  # only the client can end this wait
        await send({"type": "http.response.body", "body": b"second", "more_body": False})

    port = await serve_in_process(nursery, streaming, restore_tcp_server(transport_kind))
    raw = await Raw.connect(port)
    await raw.send(get_bytes("/"))
    with trio.fail_after(HANG):
        await raw.until(b"first")
        first_seen.set()
        await raw.until(b"second")
        await raw.until(b"0\r\n\r\n")  # the chunked body's end
    await raw.aclose()


async def test_response_head_is_not_held_while_the_app_waits_before_its_body(
    transport_kind: str, nursery: trio.Nursery, restore_tcp_server: Callable[[str], type]
) -> None:
    """The fast transport writes a head together with the body that follows it; an
    app that awaits between the two must still see its head reach the client."""
    head_seen = trio.Event()

    async def slow_body(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        headers = [(b"content-length", b"4")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await head_seen.wait()  # only the client can end this wait
        await send({"type": "http.response.body", "body": b"body"})

    port = await serve_in_process(nursery, slow_body, restore_tcp_server(transport_kind))
    raw = await Raw.connect(port)
    for _ in range(2):  # and again on the same connection, after a response
        head_seen = trio.Event()
        await raw.send(get_bytes("/"))
        with trio.fail_after(HANG):
            await raw.until(b"\r\n\r\n")
            head_seen.set()
            assert (await raw.response()).body == b"body"
    await raw.aclose()


async def test_fast_transport_closes_even_without_the_close_fix(
    nursery: trio.Nursery, restore_tcp_server: Callable[[str], type]
) -> None:
    """A plain QuartTrio app, no CompleteSends: the fast transport still closes.

    (hypercorn's own TCPServer does not: that is the defect
    trio_counters/connection.py works around, and why it stays.)
    """
    plain = QuartTrio("plain")

    @plain.route("/")
    async def index() -> str:
        return "ok"

    keep_alive = 0.5
    port = await serve_in_process(
        nursery, plain, restore_tcp_server("fast"), keep_alive_timeout=keep_alive
    )
    for request in (get_bytes("/", version="1.0"), get_bytes("/", "Connection: close")):
        raw = await Raw.connect(port)
        await raw.send(request)
        with trio.fail_after(HANG):
            await raw.closed()
        assert bytes(raw.buffer).endswith(b"\r\n\r\nok")
    idle = await Raw.connect(port)
    await idle.send(get_bytes("/"))
    assert (await idle.response()).body == b"ok"
    with trio.fail_after(keep_alive + HANG):
        await idle.closed()


async def test_close_fix_shields_sends_on_the_stock_transport_and_steps_aside_on_fast(
    transport_kind: str, restore_tcp_server: Callable[[str], type], monkeypatch: pytest.MonkeyPatch
) -> None:
    """CompleteSends lets a send run to its end despite a cancellation -- the stock
    transport needs that -- and hands the app hypercorn's send as is on the fast one."""
    monkeypatch.setattr(run_module, "TCPServer", restore_tcp_server(transport_kind))
    seen: list[str] = []

    async def send(message: dict[str, Any]) -> None:
        await trio.sleep(0)  # hypercorn's send has checkpoints inside
        seen.append(message["type"])

    async def app(scope: dict[str, Any], receive: Any, app_send: Any) -> None:
        seen.append("same send" if app_send is send else "wrapped send")
        with trio.CancelScope() as cancelled:
            cancelled.cancel()  # as quart-trio's http.disconnect does mid-send
            await app_send({"type": "http.response.body"})

    await CompleteSends(app)({"type": "http"}, None, send)
    if transport_kind == "stock":
        assert seen == ["wrapped send", "http.response.body"]
    else:
        assert seen == ["same send"]


class ClosingStream:
    """A stream caught in ``send_eof``, as trio's ``SocketStream`` is at the checkpoint
    inside it: a write meanwhile raises ``BusyResourceError``, as trio's does."""

    def __init__(self) -> None:
        self.closing = trio.Event()
        self.may_close = trio.Event()
        self._in_send_eof = False
        self.sent = b""

    async def send_all(self, data: bytes) -> None:
        if self._in_send_eof:
            raise trio.BusyResourceError("another task is currently sending data on this SocketStream")
        await trio.lowlevel.checkpoint()
        self.sent += data

    async def send_eof(self) -> None:
        self._in_send_eof = True
        self.closing.set()
        await self.may_close.wait()
        self._in_send_eof = False

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def test_a_write_that_meets_the_close_is_a_write_to_a_closed_connection(
    nursery: trio.Nursery,
) -> None:
    """The read loop closes the connection (``send_eof``, outside the send lock) while
    an app task writes its answer: on the stock transport the write ends as one to a
    closed connection would, not as the app's error (hypercorn logs "Error in ASGI
    Framework" for it). The fast transport writes to the socket itself, past trio's
    conflict detector, and finds it shut down."""
    stream = ClosingStream()
    server = GuardedTCPServer(None, Config(), WorkerContext(None), None, stream)
    told: list[Any] = []

    class Protocol:
        async def handle(self, event: Any) -> None:
            told.append(event)

    server.protocol = Protocol()
    nursery.start_soon(server._close)
    await stream.closing.wait()
    await server.protocol_send(RawData(data=b"HTTP/1.1 200 \r\n\r\n"))
    stream.may_close.set()
    assert told == [Closed()]
    assert stream.sent == b""


def test_a_failure_quoting_the_client_is_logged_bounded_with_its_end() -> None:
    """A failure's message may quote what the client sent: the guard logs its traceback's
    head and end (where the exception is), never 100 KB of the client's bytes."""
    try:
        raise ValueError("the client sent " + "x" * 100_000)
    except ValueError as error:
        failure = error
    logged = bounded_traceback(failure)
    assert len(logged) < LOGGED_TRACEBACK + 100
    assert logged.startswith("Traceback (most recent call last):")
    assert logged.endswith("x" * 1000)
    assert "characters left out" in logged
    short = ValueError("short")
    assert bounded_traceback(short) == "ValueError: short"


@pytest.mark.parametrize("tcp_server", [FastTCPServer, GuardedTCPServer], ids=["fast", "stock"])
async def test_requests_pipelined_behind_a_reset_are_not_started(
    tcp_server: type, nursery: trio.Nursery, restore_tcp_server: Callable[[str], type]
) -> None:
    """A client pipelines three requests and resets while the first is in the app: the
    first answer's write fails, the connection is closed, and the two requests behind
    it are never started -- nobody could read their answers. (hypercorn started them
    one after another, each answered into the void.)"""
    started: list[str] = []
    first_started, release = trio.Event(), trio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        started.append(scope["path"])
        if len(started) == 1:
            first_started.set()
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    port = await serve_in_process(nursery, app, tcp_server)
    client = trio.socket.socket()
    await client.connect((HOST, port))
    await client.send(get_bytes("/1") + get_bytes("/2") + get_bytes("/3"))
    with trio.fail_after(HANG):
        await first_started.wait()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()  # a reset
    await trio.sleep(0.1)  # for the kernel to take the reset in
    release.set()
    await trio.sleep(0.5)  # time enough for /2 and /3 to be started, were they
    assert started == ["/1"]


async def test_connections_already_waiting_are_taken_in_one_turn() -> None:
    """The batched accept takes every connection the kernel has finished, without a
    yield, each set up as trio's own accept sets it up (non-blocking, in a
    SocketStream); then finds none."""
    listening = socket.socket()
    listening.bind((HOST, 0))
    listening.listen(16)
    listening.setblocking(False)
    clients = [socket.create_connection(listening.getsockname()) for _ in range(5)]
    try:
        streams = waiting_connections(listening)
        assert len(streams) == 5
        assert all(isinstance(stream, trio.SocketStream) for stream in streams)
        assert not any(os.get_blocking(stream.socket.fileno()) for stream in streams)
        assert waiting_connections(listening) == []
        for stream in streams:
            await stream.aclose()
    finally:
        for client in clients:
            client.close()
        listening.close()


async def test_the_batched_worker_answers_a_burst_of_new_connections(
    nursery: trio.Nursery, restore_tcp_server: Callable[[str], type]
) -> None:
    """hypercorn's worker_serve as copied for the fast transport, with the batched
    accept: 100 connections opened at once are each answered."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    run_module.TCPServer = FastTCPServer  # restored by the fixture
    config = Config()
    config.bind = [f"{HOST}:0"]
    binds = await nursery.start(partial(batched_worker_serve, ASGIWrapper(app), config))
    port = int(binds[0].rsplit(":", 1)[1])
    answers: list[bytes] = []

    async def client() -> None:
        async with await Raw.connect(port) as raw:
            await raw.send(get_bytes("/"))
            answers.append((await raw.response()).body)

    with trio.fail_after(HANG):
        async with trio.open_nursery() as clients:
            for _ in range(100):
                clients.start_soon(client)
    assert answers == [b"ok"] * 100
