"""The trio transport (trio_counters/transport/): every behaviour, on both transports.

Most tests start the real ``hypercorn --worker-class trio trio_counters:app`` with
``TRIO_COUNTERS_TRANSPORT`` set to ``stock`` or ``fast`` and talk to it over raw
sockets, so that what is checked is the bytes and the closes a client sees. Two
tests serve a small ASGI app in-process (a streamed body, and a QuartTrio app
without the close fix); the rest are unit tests of the version pin.
"""

from __future__ import annotations

import signal
import socket
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import h2.config
import h2.connection
import h2.events
import hypercorn.trio.run as run_module
import pytest
import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config
from hypercorn.trio.tcp_server import TCPServer as StockTCPServer
from quart_trio import QuartTrio

from hypercorn_process import Server, run_hypercorn
from trio_counters import transport
from trio_counters.connection import CompleteSends
from trio_counters.config import ConfigError
from trio_counters.transport import FastTCPServer, TransportFallbackWarning

TRANSPORTS = ("stock", "fast")
#: A bound on any single wait for the server; generous, since the machine is shared.
PATIENCE = 10.0


@pytest.fixture(params=TRANSPORTS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


async def serve(nursery: trio.Nursery, kind: str, *args: str) -> Server:
    """hypercorn's trio worker serving trio_counters:app with the ``kind`` transport."""
    return await nursery.start(
        partial(
            run_hypercorn,
            env={"TRIO_COUNTERS_TRANSPORT": kind},
            args=["--backlog", "1024", *args],
        )
    )


@dataclass
class Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


class Raw:
    """One client connection, bytes in and out, with a minimal HTTP/1.1 response reader."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    @classmethod
    async def connect(cls, port: int) -> Raw:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _more(self) -> bool:
        try:
            chunk = await self.stream.receive_some(65536)
        except trio.BrokenResourceError:  # reset by the peer: closed too
            chunk = b""
        self.buffer += chunk
        return bool(chunk)

    async def response(self) -> Response:
        """The next response (a 1xx included); raises EOFError if the server closes first."""
        while b"\r\n\r\n" not in self.buffer:
            if not await self._more():
                raise EOFError(f"closed before a response; got {bytes(self.buffer)!r}")
        head, _, _ = bytes(self.buffer).partition(b"\r\n\r\n")
        del self.buffer[: len(head) + 4]
        status_line, *lines = head.split(b"\r\n")
        status = int(status_line.split()[1])
        headers = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        length = 0 if status < 200 else int(headers.get(b"content-length", b"0"))
        while len(self.buffer) < length:
            if not await self._more():
                raise EOFError("closed in the middle of a body")
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        return Response(status, headers, body)

    async def until(self, marker: bytes) -> None:
        while marker not in self.buffer:
            if not await self._more():
                raise EOFError(f"closed before {marker!r}; got {bytes(self.buffer)!r}")

    async def closed(self) -> bytes:
        """Read until the server closes the connection; what came before the close."""
        while await self._more():
            pass
        return bytes(self.buffer)

    async def aclose(self) -> None:
        await self.stream.aclose()


def get(target: str, *extra: str, version: str = "1.1") -> bytes:
    lines = [f"GET {target} HTTP/{version}", "Host: 127.0.0.1", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post_set_head(length: int, *extra: str) -> bytes:
    """The head of a form POST to /set announcing ``length`` body bytes; the body is the caller's."""
    lines = [
        "POST /set HTTP/1.1",
        "Host: 127.0.0.1",
        *extra,
        "Content-Type: application/x-www-form-urlencoded",
        f"Content-Length: {length}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def value_of(port: int, name: str) -> bytes:
    raw = await Raw.connect(port)
    await raw.send(get(f"/get?name={name}"))
    response = await raw.response()
    await raw.aclose()
    return response.body


async def closes_within(raw: Raw, seconds: float) -> float:
    """Wait for the server to close ``raw``; fail past ``seconds``. How long it took."""
    start = trio.current_time()
    with trio.fail_after(seconds):
        await raw.closed()
    return trio.current_time() - start


# --- keep-alive ---------------------------------------------------------------


async def test_keep_alive_reuses_one_connection(kind: str, nursery: trio.Nursery) -> None:
    """Many requests on one connection, pipelined ones and a 100-continue included."""
    server = await serve(nursery, kind)
    raw = await Raw.connect(server.port)
    with trio.fail_after(PATIENCE):
        for _ in range(50):
            await raw.send(get("/inc?name=i"))
            assert (await raw.response()).body == b"ok\n"
        # Pipelined: three requests in one write, three answers in order.
        await raw.send(get("/inc?name=i") * 2 + get("/get?name=i"))
        assert [(await raw.response()).body for _ in range(3)] == [b"ok\n", b"ok\n", b"i: 52\n"]
        # Expect: 100-continue: the interim answer must come while the app
        # waits for the body -- nothing may be held back then.
        body = b"name=i&val=7"
        await raw.send(post_set_head(len(body), "Expect: 100-continue"))
        assert (await raw.response()).status == 100
        await raw.send(body)
        assert (await raw.response()).body == b"ok\n"
        await raw.send(get("/get?name=i"))
        assert (await raw.response()).body == b"i: 7\n"
    await raw.aclose()


async def test_idle_connections_are_reaped_and_activity_moves_the_deadline(
    kind: str, nursery: trio.Nursery
) -> None:
    keep_alive = 2.0
    server = await serve(nursery, kind, "--keep-alive", f"{keep_alive:g}")

    async def reaped_after_one_request() -> None:
        raw = await Raw.connect(server.port)
        await raw.send(get("/inc?name=i"))
        assert (await raw.response()).status == 200
        waited = await closes_within(raw, keep_alive + PATIENCE)
        assert waited >= keep_alive * 0.9, f"closed after {waited:.2f} s, before the keep-alive"

    async def kept_while_active() -> None:
        # Requests spaced well inside the keep-alive, for twice its length: the
        # deadline must move with each response, or the connection dies midway.
        raw = await Raw.connect(server.port)
        start = trio.current_time()
        while trio.current_time() - start < 2 * keep_alive:
            await raw.send(get("/inc?name=j"))
            assert (await raw.response()).status == 200
            await trio.sleep(keep_alive / 4)
        await closes_within(raw, keep_alive + PATIENCE)

    async def reaped_without_any_request() -> None:
        raw = await Raw.connect(server.port)
        await closes_within(raw, keep_alive + PATIENCE)

    async with trio.open_nursery() as clients:
        clients.start_soon(reaped_after_one_request)
        clients.start_soon(kept_while_active)
        clients.start_soon(reaped_without_any_request)


async def test_200_keep_alive_connections_count_exactly(kind: str, nursery: trio.Nursery) -> None:
    server = await serve(nursery, kind)
    connections, each = 200, 15
    answered = 0

    async def client() -> None:
        nonlocal answered
        raw = await Raw.connect(server.port)
        for _ in range(each):
            await raw.send(get("/inc?name=i"))
            response = await raw.response()  # EOFError if the server dropped it
            assert (response.status, response.body) == (200, b"ok\n")
            answered += 1
        await raw.aclose()

    with trio.fail_after(60):
        async with trio.open_nursery() as clients:
            for _ in range(connections):
                clients.start_soon(client)
    assert answered == connections * each
    assert await value_of(server.port, "i") == f"i: {connections * each}\n".encode()


# --- closing ------------------------------------------------------------------


async def test_http10_and_connection_close_close_promptly(
    kind: str, nursery: trio.Nursery
) -> None:
    """Closed by the server right after the answer, not by the (long) idle timer."""
    keep_alive = 60.0
    server = await serve(nursery, kind, "--keep-alive", f"{keep_alive:g}")
    requests = [get("/inc?name=i", version="1.0")] * 20 + [
        get("/inc?name=i", "Connection: close")
    ] * 20
    for request in requests:
        raw = await Raw.connect(server.port)
        await raw.send(request)
        await closes_within(raw, PATIENCE)
        answer = bytes(raw.buffer)
        assert answer.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")), answer
        assert answer.endswith(b"\r\n\r\nok\n"), answer
        await raw.aclose()
    # A request hypercorn refuses (h11 cannot parse it, or it is too large) is
    # answered with an error and closed by hypercorn itself; the server goes on.
    for refused, status in ((b"NOT HTTP AT ALL\r\n\r\n", b"400"), (get("/" + "x" * 70000), b"431")):
        raw = await Raw.connect(server.port)
        await raw.send(refused)
        await closes_within(raw, PATIENCE)
        assert bytes(raw.buffer).startswith(b"HTTP/1.1 " + status), bytes(raw.buffer)[:40]
    assert await value_of(server.port, "i") == b"i: 40\n"


async def test_read_timeout(kind: str, nursery: trio.Nursery) -> None:
    """A request that stops half-way is dropped at --read-timeout.

    The half-sent *headers* case also tells the two transports apart, which
    proves that TRIO_COUNTERS_TRANSPORT reached the served process: hypercorn's
    own TCPServer keeps that socket until its idle timer (--keep-alive) fires,
    because the timer task outlives the read loop; ours ends both together.
    """
    read_timeout, keep_alive = 1.0, 30.0
    server = await serve(
        nursery, kind, "--read-timeout", f"{read_timeout:g}", "--keep-alive", f"{keep_alive:g}"
    )

    async def half_body() -> None:
        raw = await Raw.connect(server.port)
        await raw.send(post_set_head(20) + b"name=")
        waited = await closes_within(raw, keep_alive / 2)
        assert waited >= read_timeout * 0.9

    async def half_headers() -> None:
        raw = await Raw.connect(server.port)
        await raw.send(b"GET /get?name=i HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        if kind == "fast":
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
    assert await value_of(server.port, "i") == b"i: 0\n"


# --- shutdown -----------------------------------------------------------------


async def in_flight(port: int, body: bytes) -> Raw:
    """A POST whose body the app is waiting for: the 100 Continue says it got that far."""
    raw = await Raw.connect(port)
    await raw.send(post_set_head(len(body), "Expect: 100-continue"))
    with trio.fail_after(PATIENCE):
        assert (await raw.response()).status == 100
    return raw


async def test_sigterm_finishes_the_request_in_flight_then_exits_0(
    kind: str, nursery: trio.Nursery
) -> None:
    graceful = 2.0
    server = await serve(nursery, kind, "--graceful-timeout", f"{graceful:g}")
    idle = await Raw.connect(server.port)
    await idle.send(get("/inc?name=i"))
    assert (await idle.response()).status == 200
    body = b"name=i&val=41"
    busy = await in_flight(server.port, body)
    stuck = await in_flight(server.port, body)  # its body never comes

    server.process.send_signal(signal.SIGTERM)
    signalled = trio.current_time()
    # Shutdown has begun once the idle connection is closed...
    await closes_within(idle, PATIENCE)
    # ...and the request in flight still completes, then its connection closes.
    await busy.send(body)
    with trio.fail_after(PATIENCE):
        response = await busy.response()
    assert (response.status, response.body) == (200, b"ok\n")
    await closes_within(busy, PATIENCE)
    # The stuck one is given up at the graceful timeout, and the process exits.
    await closes_within(stuck, graceful + PATIENCE)
    assert await server.wait(PATIENCE) == 0, server.log
    assert trio.current_time() - signalled < graceful + PATIENCE


# --- h2c ----------------------------------------------------------------------


async def test_h2c_upgrade_then_h2_requests(kind: str, nursery: trio.Nursery) -> None:
    server = await serve(nursery, kind)
    raw = await Raw.connect(server.port)
    h2conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    settings = h2conn.initiate_upgrade_connection()
    assert settings is not None
    await raw.send(
        get(
            "/inc?name=i",
            "Connection: Upgrade, HTTP2-Settings",
            "Upgrade: h2c",
            "HTTP2-Settings: " + settings.decode(),
        )
    )
    with trio.fail_after(PATIENCE):
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
    assert await value_of(server.port, "i") == b"i: 3\n"


# --- in-process: a streamed body; the close without trio_counters' fix --------


async def serve_in_process(
    nursery: trio.Nursery, app: Any, tcp_server: type, **settings: Any
) -> int:
    """hypercorn's trio worker_serve, in this process, with ``tcp_server``; its port."""
    run_module.TCPServer = tcp_server  # restored by the fixture below
    config = Config()
    config.bind = ["127.0.0.1:0"]
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
    kind: str, nursery: trio.Nursery, restore_tcp_server: Callable[[str], type]
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

    port = await serve_in_process(nursery, streaming, restore_tcp_server(kind))
    raw = await Raw.connect(port)
    await raw.send(get("/"))
    with trio.fail_after(PATIENCE):
        await raw.until(b"first")
        first_seen.set()
        await raw.until(b"second")
        await raw.until(b"0\r\n\r\n")  # the chunked body's end
    await raw.aclose()


async def test_response_head_is_not_held_while_the_app_waits_before_its_body(
    kind: str, nursery: trio.Nursery, restore_tcp_server: Callable[[str], type]
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

    port = await serve_in_process(nursery, slow_body, restore_tcp_server(kind))
    raw = await Raw.connect(port)
    for _ in range(2):  # and again on the same connection, after a response
        head_seen = trio.Event()
        await raw.send(get("/"))
        with trio.fail_after(PATIENCE):
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
    for request in (get("/", version="1.0"), get("/", "Connection: close")):
        raw = await Raw.connect(port)
        await raw.send(request)
        await closes_within(raw, PATIENCE)
        assert bytes(raw.buffer).endswith(b"\r\n\r\nok")
    idle = await Raw.connect(port)
    await idle.send(get("/"))
    assert (await idle.response()).body == b"ok"
    await closes_within(idle, keep_alive + PATIENCE)


async def test_close_fix_shields_sends_on_the_stock_transport_and_steps_aside_on_fast(
    kind: str, restore_tcp_server: Callable[[str], type], monkeypatch: pytest.MonkeyPatch
) -> None:
    """CompleteSends lets a send run to its end despite a cancellation -- the stock
    transport needs that -- and hands the app hypercorn's send as is on the fast one."""
    monkeypatch.setattr(run_module, "TCPServer", restore_tcp_server(kind))
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
    if kind == "stock":
        assert seen == ["wrapped send", "http.response.body"]
    else:
        assert seen == ["same send"]


# --- the version pin and the setting ------------------------------------------


@pytest.fixture
def fresh_install_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_module, "TCPServer", run_module.TCPServer)
    monkeypatch.setattr(transport, "_warned", False)


def fallback_warnings(*calls: Callable[[], Any]) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for call in calls:
            assert call() is False
    return [w for w in caught if issubclass(w.category, TransportFallbackWarning)]


def test_another_hypercorn_version_falls_back_with_one_warning(
    fresh_install_state: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport, "_hypercorn_version", lambda: "0.18.1")
    caught = fallback_warnings(
        lambda: transport.install(True),
        lambda: transport.install(True),
        lambda: transport.install_from_environ({"TRIO_COUNTERS_TRANSPORT": "fast"}),
    )
    assert len(caught) == 1
    assert "0.18.1" in str(caught[0].message) and "0.18.0" in str(caught[0].message)
    assert run_module.TCPServer is StockTCPServer
    assert transport.active() == "stock"


def test_a_missing_internal_falls_back_with_one_warning(
    fresh_install_state: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(StockTCPServer, "_initiate_server_close")
    caught = fallback_warnings(lambda: transport.install(True), lambda: transport.install(True))
    assert len(caught) == 1
    assert "_initiate_server_close" in str(caught[0].message)
    assert run_module.TCPServer is StockTCPServer


def test_the_setting_selects_the_transport(fresh_install_state: None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # on the checked hypercorn: no warning at all
        assert transport.install_from_environ({"TRIO_COUNTERS_TRANSPORT": "fast"}) is True
        assert run_module.TCPServer is FastTCPServer and transport.active() == "fast"
        assert transport.install_from_environ({"TRIO_COUNTERS_TRANSPORT": " Stock "}) is False
        assert run_module.TCPServer is StockTCPServer and transport.active() == "stock"
        transport.install_from_environ({})
        assert transport.active() == transport.DEFAULT_TRANSPORT
    with pytest.raises(ConfigError, match="TRIO_COUNTERS_TRANSPORT"):
        transport.install_from_environ({"TRIO_COUNTERS_TRANSPORT": "fastest"})


async def test_connections_closed_by_the_server_never_take_a_new_ones_data(
    kind: str, nursery: trio.Nursery
) -> None:
    """Closes and new connections interleaved: each new one is answered.

    A closed socket's file descriptor number is reused by the next accepted
    connection at once, so a reader that woke for the old connection must not
    read through the number after its socket was closed: the new connection's
    request would vanish, and the client wait until the idle timeout.
    """
    server = await serve(nursery, kind, "--keep-alive", "30")
    answered = 0

    async def closing() -> None:
        # Refused before its body is read (413), so hypercorn closes the
        # connection from the app's task, while the body still streams in and
        # keeps waking the reading task.
        raw = await Raw.connect(server.port)
        await raw.send(post_set_head(1_000_000))
        with trio.move_on_after(PATIENCE):
            try:
                while True:
                    await raw.send(b"x" * 1000)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        await closes_within(raw, PATIENCE)
        assert bytes(raw.buffer).startswith(b"HTTP/1.1 413")
        await raw.aclose()

    async def fresh() -> None:
        nonlocal answered
        raw = await Raw.connect(server.port)
        await raw.send(get("/inc?name=i"))
        with trio.fail_after(PATIENCE):
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
    assert await value_of(server.port, "i") == f"i: {rounds * width}\n".encode()
