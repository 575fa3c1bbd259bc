"""Abuse, end to end: the real hypercorn process, tried the way a careless or hostile client would.

Issue 4's "Limits" and "Faults" cases, each against ``hypercorn --worker-class
trio`` on a free loopback port (``tests/hypercorn_process.py``), started with a
short ``--keep-alive`` so that idle-connection reaping is seen within the test:

- oversized request lines, headers, query strings and bodies get a 4xx and create nothing;
- bytes that are not HTTP get a 400 or a closed connection, never a hang, and the
  server keeps serving everyone else;
- hundreds of idle connections, half-sent requests and a slowloris do not slow other
  clients down, and are closed after the keep-alive timeout: hypercorn's timer is a
  deadline for the whole request head, not reset by each byte;
- clients that disconnect at every stage of a request, under load, leave a count
  between what was acknowledged and what was acknowledged plus what might have been
  applied: never more, never less;
- SIGINT twice under load still ends the process within the graceful timeout.

Everything is bounded with ``trio.fail_after``; the only sleeps pace clients (a
slowloris, a witness that asks every few milliseconds), none waits for a server.
Each test prints what it measured (``pytest -s`` shows it).
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
import signal
import socket
import statistics
import struct
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator

import h11
import pytest
import trio

from client import Connection, request
from conftest import SAFE_STRATEGIES
from hypercorn_process import Server, run_hypercorn
from trio_counters.app import BODY_TIMEOUT, MAX_BODY_BYTES, MAX_QUERY_BYTES

#: ``--keep-alive`` for every server here, in seconds: short, so reaping shows quickly.
KEEP_ALIVE = 2
#: ``--graceful-timeout`` for the SIGINT test (hypercorn's default is 3 s).
GRACEFUL_TIMEOUT = 1
#: Slack for a loaded 2-core machine; a passing run never waits for it.
PROMPT = 5
#: The worst latency a well-behaved client may see while others misbehave.
WITNESS_LIMIT = 1.0
#: hypercorn's ``h11_max_incomplete_size``: an unfinished request head past it gets 431.
H11_MAX_INCOMPLETE = 16 * 1024
#: hypercorn reads at most this much per receive (``hypercorn/trio/tcp_server.py`` MAX_RECV).
MAX_RECV = 64 * 1024

_TRANSPORT_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)


_started: list[Server] = []


@pytest.fixture(autouse=True)
def _show_server_log_on_trouble() -> Iterator[None]:
    """A test that fails because the server died shows why: its log, if it has a traceback."""
    _started.clear()
    yield
    for server in _started:
        if unexpected_tracebacks(server):
            print(f"--- hypercorn's log, port {server.port} ---\n{server.log[-8000:]}")


async def start_server(nursery: trio.Nursery, strategy: str, *args: str) -> Server:
    server: Server = await nursery.start(
        lambda task_status: run_hypercorn(
            env={"TRIO_COUNTERS_STORE": strategy},
            args=["--keep-alive", str(KEEP_ALIVE), *args],
            task_status=task_status,
        )
    )
    _started.append(server)
    return server


async def value_of(server: Server, name: str) -> int | None:
    """The counter's value, or None if it does not exist."""
    reply = await request(server.port, f"/get?name={name}")
    if reply.status == 404:
        return None
    assert reply.status == 200, reply
    return int(reply.body.rsplit(": ", 1)[1])


#: A race in hypercorn 0.18's stock trio transport, harmless to the client: when the
#: app answers before reading a request body (413) and the client then closes, the
#: reading task's close (``TCPServer._close``: ``send_eof``, outside ``send_lock``)
#: meets the app task's last ``send_all``; the app task dies with BusyResourceError
#: and hypercorn logs "Error in ASGI Framework". The answer was already sent whole.
#: Reported with issue 4; the fast transport (``TRIO_COUNTERS_TRANSPORT=fast``) does
#: not have it.
_KNOWN_HYPERCORN_RACE = "BusyResourceError: another task is currently sending data on this SocketStream"
_LOG_RECORD = re.compile(r"^(?=\[\d{4}-\d\d-\d\d )", re.MULTILINE)


def unexpected_tracebacks(server: Server) -> list[str]:
    """The log records with a traceback in them, but for the known hypercorn race above."""
    return [
        record
        for record in _LOG_RECORD.split(server.log)
        if "Traceback" in record
        and not ("Error in ASGI Framework" in record and _KNOWN_HYPERCORN_RACE in record
                 and "hypercorn/trio/tcp_server.py" in record)
    ]  # fmt: skip


def assert_no_traceback(server: Server) -> None:
    unexpected = unexpected_tracebacks(server)
    assert not unexpected, "\n".join(unexpected)
    known = server.log.count(_KNOWN_HYPERCORN_RACE)
    if known:
        print(f"(hypercorn's known close race logged {known} time(s))")


def abort(stream: trio.SocketStream) -> None:
    """Make the next close a TCP reset (RST), as a crashing client's does."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@dataclasses.dataclass
class Outcome:
    """What one raw exchange got back."""

    #: The response's status, or None if none came.
    status: int | None
    #: The server ended the connection (EOF or reset) before the deadline.
    closed: bool
    #: Seconds from the first byte sent to the response, or to the close if one was awaited.
    seconds: float
    head: bytes = b""

    def __str__(self) -> str:
        ending = "closed" if self.closed else "kept open"
        return f"{self.status or 'no answer'}, {ending}, {self.seconds:.2f} s"


def _parse_response(data: bytes) -> tuple[int, bytes, int] | None:
    """(status, head, total length) once a whole response is in ``data``."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = data[:end]
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-length":
            length = int(value)
    total = end + 4 + length
    return (status, head, total) if len(data) >= total else None


async def exchange(port: int, data: bytes, *, deadline: float = PROMPT) -> Outcome:
    """Send raw bytes; read one response. If the server says it will close (or does
    not answer at all), wait for that close too, up to ``deadline``."""
    start = trio.current_time()
    received = bytearray()
    status: int | None = None
    head = b""
    closed = False
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        try:
            await stream.send_all(data)
        except _TRANSPORT_ERRORS:
            pass  # the server stopped reading (and answered, or closed): see below
        with trio.move_on_after(deadline):
            while True:
                try:
                    chunk = await stream.receive_some(65536)
                except _TRANSPORT_ERRORS:
                    chunk = b""  # a reset: the server is gone from this connection
                if not chunk:
                    closed = True
                    break
                received += chunk
                parsed = _parse_response(bytes(received)) if status is None else None
                if parsed is not None:
                    status, head, _ = parsed
                    if b"connection: close" not in head.lower():
                        break  # a keep-alive answer: nothing more to wait for
        if status is None and received:
            parsed_head = bytes(received).split(b"\r\n", 1)[0]
            head = parsed_head
            if parsed_head.startswith(b"HTTP/1.1 "):
                status = int(parsed_head.split(b" ", 2)[1])
    return Outcome(status, closed, trio.current_time() - start, head)


class Witness:
    """A well-behaved client that keeps asking while others misbehave.

    Two loops, paced a few milliseconds apart: one keep-alive connection, and a new
    connection per request. Records every latency and every failure.
    """

    def __init__(self, port: int, name: str = "i") -> None:
        self.port = port
        self.target = f"/get?name={name}"
        self.latencies: list[float] = []
        self.failures: list[str] = []

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._keep_alive)
            nursery.start_soon(self._new_connections)
            task_status.started()

    async def _timed(self, call: Callable[[], Awaitable[object]]) -> None:
        start = trio.current_time()
        try:
            reply = await call()
        except (*_TRANSPORT_ERRORS, ConnectionError) as error:
            self.failures.append(repr(error))
            return
        self.latencies.append(trio.current_time() - start)
        if reply.status != 200:  # type: ignore[attr-defined]
            self.failures.append(f"status {reply.status}")  # type: ignore[attr-defined]

    async def _keep_alive(self) -> None:
        while True:
            async with await Connection.open(self.port) as connection:
                # hypercorn closes a connection after 1000 requests (keep_alive_max_requests).
                while connection.h11.our_state is not h11.MUST_CLOSE:
                    await self._timed(lambda: connection.request(self.target))
                    await trio.sleep(0.005)

    async def _new_connections(self) -> None:
        while True:
            await self._timed(lambda: request(self.port, self.target))
            await trio.sleep(0.01)

    def check(self, minimum: int) -> str:
        assert not self.failures, self.failures[:5]
        assert len(self.latencies) >= minimum, f"only {len(self.latencies)} answers"
        worst = max(self.latencies)
        assert worst < WITNESS_LIMIT, f"a well-behaved client waited {worst:.2f} s"
        return f"witness: {len(self.latencies)} answers, median {statistics.median(self.latencies) * 1000:.1f} ms, worst {worst * 1000:.0f} ms"


# --------------------------------------------------------------------------------------
# Limits: oversized requests


def _request(target: str, headers: bytes = b"", method: bytes = b"GET", body: bytes = b"") -> bytes:
    return method + b" " + target.encode() + b" HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n" + body


def _query_of_length(name: str, length: int) -> str:
    """``name=NAME&val=1&pad=...``, exactly ``length`` bytes long."""
    start = f"name={name}&val=1&pad="
    return start + "p" * (length - len(start))


_FORM = b"Content-Type: application/x-www-form-urlencoded\r\n"

#: (id, raw request, the statuses allowed, the counter it would have created).
#:
#: hypercorn's 16 KiB limit (``h11_max_incomplete_size``) applies to a request head
#: that is still *unfinished* after a read; a whole head that arrives in one read of
#: up to 64 KiB (MAX_RECV) is parsed by hypercorn whatever its size, so the app
#: refuses headers over 16 KiB itself (MAX_HEADER_BYTES, 431).
OVERSIZED: list[tuple[str, bytes, set[int], str]] = [
    (
        f"query string of {MAX_QUERY_BYTES + 1} B",
        _request("/set?" + _query_of_length("o1", MAX_QUERY_BYTES + 1)),
        {414},
        "o1",
    ),
    ("query string of 15 KiB", _request("/set?" + _query_of_length("o2", 15 * 1024)), {414}, "o2"),
    (
        "request line of 17 KiB, unfinished",
        b"GET /set?" + _query_of_length("o3", H11_MAX_INCOMPLETE + 1024).encode(),
        {431},
        "o3",
    ),
    (
        "request line of 68 KiB",
        _request("/set?" + _query_of_length("o4", MAX_RECV + 4 * 1024)),
        {431},
        "o4",
    ),
    (
        "header block of 17 KiB, unfinished",
        b"GET /set?name=o5&val=1 HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * (H11_MAX_INCOMPLETE + 1024),
        {431},
        "o5",
    ),
    (
        "one header of 20 KiB, complete",
        _request("/set?name=o12&val=1", b"X-Big: " + b"b" * (20 * 1024) + b"\r\n"),
        {431},
        "o12",
    ),
    (
        "one header of 68 KiB",
        _request("/set?name=o6&val=1", b"X-Big: " + b"b" * (MAX_RECV + 4 * 1024) + b"\r\n"),
        {431},
        "o6",
    ),
    (
        "10,000 headers (90 KiB)",
        _request("/set?name=o7&val=1", b"".join(b"X-%05d: v\r\n" % n for n in range(10_000))),
        {431},
        "o7",
    ),
    (
        f"form body of {MAX_BODY_BYTES + 1} B",
        _request(
            "/set", _FORM + b"Content-Length: %d\r\n" % (MAX_BODY_BYTES + 1), b"POST",
            b"name=o8&val=1&pad=" + b"p" * (MAX_BODY_BYTES + 1 - 18),
        ),
        {413},
        "o8",
    ),
    (
        "Content-Length of 1 GB, no body",
        _request("/set?name=o9&val=1", _FORM + b"Content-Length: 1000000000\r\n", b"POST"),
        {413},
        "o9",
    ),
    (
        "chunked form body of 5000 B",
        _request(
            "/set", _FORM + b"Transfer-Encoding: chunked\r\n", b"POST",
            b"%x\r\n" % 5000 + (b"name=o10&val=1&pad=" + b"p" * 5000)[:5000] + b"\r\n0\r\n\r\n",
        ),
        {413},
        "o10",
    ),
    ("inc with a 5000 B query string", _request("/inc?name=i&pad=" + "p" * 5000), {414}, "o11"),
]  # fmt: skip


@pytest.mark.parametrize("strategy", SAFE_STRATEGIES)
async def test_oversized_requests_are_refused_with_4xx_and_create_nothing(
    nursery: trio.Nursery, strategy: str
) -> None:
    server = await start_server(nursery, strategy)
    with trio.fail_after(30):
        # The limit is where the README says: a query string of exactly 4096 bytes is fine.
        at_limit = await exchange(server.port, _request("/set?" + _query_of_length("o0", MAX_QUERY_BYTES)))
        assert at_limit.status == 200, at_limit
        outcomes: dict[str, Outcome] = {}

        async def one(case_id: str, raw: bytes) -> None:
            outcomes[case_id] = await exchange(server.port, raw)

        async with trio.open_nursery() as cases:
            for case_id, raw, _, _ in OVERSIZED:
                cases.start_soon(one, case_id, raw)
        for case_id, _, allowed, _ in OVERSIZED:
            print(f"{strategy}: {case_id}: {outcomes[case_id]}")
        for case_id, _, allowed, name in OVERSIZED:
            assert outcomes[case_id].status in allowed, (case_id, outcomes[case_id])
            if outcomes[case_id].status == 431 and name != "o12":
                # hypercorn's refusal also closes; the app's own 431 (o12: a complete
                # head, refused by the app like a long query) keeps the connection.
                assert outcomes[case_id].closed, (case_id, outcomes[case_id])
            assert await value_of(server, name) is None, f"{case_id} created {name}"
        assert await value_of(server, "o0") == 1
        assert await value_of(server, "i") == 0
    assert_no_traceback(server)


# --------------------------------------------------------------------------------------
# Faults: bytes that are not HTTP

_RANDOM = random.Random(4)
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
    nursery: trio.Nursery, strategy: str
) -> None:
    server = await start_server(nursery, strategy)
    witness = Witness(server.port)
    outcomes: dict[str, list[Outcome]] = {}
    next_client: list[int] = []

    async def one(case_id: str, raw: bytes) -> None:
        outcomes.setdefault(case_id, []).append(await exchange(server.port, raw))
        # The very next client is served.
        next_client.append((await request(server.port, "/get?name=j")).status)

    with trio.fail_after(30):
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
        print(witness.check(minimum=20))
        assert await value_of(server, "i") == 0  # every garbage /inc changed nothing
    assert_no_traceback(server)


# --------------------------------------------------------------------------------------
# Limits: idle, half-sent and slow clients


async def _until_closed(stream: trio.SocketStream) -> bytes:
    """Read until the server ends the connection (EOF or reset); what came before."""
    received = bytearray()
    while True:
        try:
            chunk = await stream.receive_some(65536)
        except _TRANSPORT_ERRORS:
            return bytes(received)
        if not chunk:
            return bytes(received)
        received += chunk


HALF_SENT: list[tuple[str, bytes]] = [
    ("half a request line", b"GET /inc?na"),
    ("request line, no headers yet", b"GET /inc?name=i HTTP/1.1\r\n"),
    ("headers without the blank line", b"GET /inc?name=i HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n"),
    ("half a header", b"GET /inc?name=i HTTP/1.1\r\nHost: x\r\nX-A: "),
    ("a lone CR", b"GET /inc?name=i HTTP/1.1\r\nHost: x\r\n\r"),
]


async def test_idle_and_half_sent_connections_do_not_block_others_and_are_reaped(
    nursery: trio.Nursery,
) -> None:
    server = await start_server(nursery, "lock")
    witness = Witness(server.port)
    closed_after: dict[str, list[float]] = {}
    slowloris_bytes: list[int] = []
    body_timeouts: list[tuple[bytes, float]] = []

    # Each clock starts before the connect: with hundreds of connects at once, this
    # task may resume well after the server has accepted and armed its timer.
    async def hold(kind: str, data: bytes) -> None:
        start = trio.current_time()
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            if data:
                await stream.send_all(data)
            received = await _until_closed(stream)
        closed_after.setdefault(kind, []).append(trio.current_time() - start)
        assert received == b"", (kind, received)  # closed without an answer

    async def keep_alive_then_idle() -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            start = trio.current_time()  # the server arms its timer after it answers
            await stream.send_all(b"GET /get?name=i HTTP/1.1\r\nHost: x\r\n\r\n")
            first = await stream.receive_some(65536)
            await _until_closed(stream)
        assert first.startswith(b"HTTP/1.1 200"), first
        closed_after.setdefault("idle after one answered request", []).append(trio.current_time() - start)

    async def slowloris(interval: float) -> None:
        # A complete request head would take this client over 100 s.
        head = b"GET /inc?name=i HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 100 + b"\r\n\r\n"
        start = trio.current_time()
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        sent = 0

        async def trickle() -> None:
            nonlocal sent
            for byte in head:
                try:
                    await stream.send_all(bytes([byte]))
                except _TRANSPORT_ERRORS:
                    return
                sent += 1
                await trio.sleep(interval)

        async with stream:
            async with trio.open_nursery() as inner:
                inner.start_soon(trickle)
                received = await _until_closed(stream)
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
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await stream.send_all(
                b"POST /inc HTTP/1.1\r\nHost: x\r\n" + _FORM + b"Content-Length: 100\r\n\r\nname=i&pad="
            )
            received = await _until_closed(stream)
        body_timeouts.append((received.split(b"\r\n", 1)[0], trio.current_time() - start))

    with trio.fail_after(BODY_TIMEOUT + 2 * PROMPT):
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
    print(witness.check(minimum=100))
    assert len(closed_after["idle, nothing sent"]) == 300
    for kind, seconds in closed_after.items():
        # Reaped by hypercorn's keep-alive timer: not before, and not much after.
        assert KEEP_ALIVE - 0.05 <= min(seconds) and max(seconds) <= KEEP_ALIVE + PROMPT, (kind, seconds)
    # The timer is a deadline for the whole request head, not reset by each byte:
    # the slowloris is cut at KEEP_ALIVE seconds, far from the end of its head.
    assert max(slowloris_bytes) < 100
    assert len(body_timeouts) == 3
    for status_line, seconds in body_timeouts:
        assert status_line.startswith(b"HTTP/1.1 408"), status_line
        assert BODY_TIMEOUT - 0.05 <= seconds <= BODY_TIMEOUT + PROMPT, seconds
    assert await value_of(server, "i") == 0  # no half request counted
    assert_no_traceback(server)


async def test_h2c_preface_escapes_the_keep_alive_timer_but_not_read_timeout(nursery: trio.Nursery) -> None:
    """An HTTP/2 prior-knowledge preface on the plain port makes hypercorn switch to h2
    and stop the keep-alive timer, which only an HTTP/1.1 answer re-arms: such a
    connection is never reaped by ``--keep-alive``. hypercorn's ``--read-timeout``
    closes it. (Measured without it: still open after 30 s.)"""
    read_timeout = 1
    server = await start_server(nursery, "lock", "--read-timeout", str(read_timeout))
    with trio.fail_after(read_timeout + 2 * PROMPT):
        start = trio.current_time()
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await stream.send_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            received = await _until_closed(stream)
        seconds = trio.current_time() - start
    print(f"h2c preface: {len(received)} bytes of h2 frames, then closed after {seconds:.2f} s")
    assert received[3:4] == b"\x04"  # the server's h2 SETTINGS frame: it did switch to h2
    assert read_timeout <= seconds < KEEP_ALIVE  # closed by the read timeout, not the keep-alive
    assert_no_traceback(server)


# --------------------------------------------------------------------------------------
# Faults: clients that disconnect mid-request, under load

COUNTER = "d"
_INC = f"GET /inc?name={COUNTER} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
_INC_FORM_HEAD = (
    b"POST /inc HTTP/1.1\r\nHost: x\r\n" + _FORM + b"Content-Length: %d\r\n\r\n"
)


async def _read_at_least(stream: trio.SocketStream, count: int) -> bytes:
    received = bytearray()
    while len(received) < count:
        try:
            chunk = await stream.receive_some(65536)
        except _TRANSPORT_ERRORS:
            break
        if not chunk:
            break
        received += chunk
    return bytes(received)


def _acknowledged(reply_start: bytes) -> bool:
    """An answer that began ``HTTP/1.1 200`` acknowledged the increment."""
    if reply_start.startswith(b"HTTP/1.1 200"):
        return True
    # Anything but silence would be a refusal this test does not expect.
    assert not reply_start, f"unexpected answer {reply_start!r}"
    return False


#: Each stage opens a connection, misbehaves, and returns (acknowledged, might have counted).
Stage = Callable[[int], Awaitable[tuple[int, int]]]


async def _connect_then_close(port: int) -> tuple[int, int]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.aclose()
    return 0, 0


async def _connect_then_reset(port: int) -> tuple[int, int]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    abort(stream)
    await stream.aclose()
    return 0, 0


async def _mid_request_line(port: int) -> tuple[int, int]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(_INC[:9])
    await stream.aclose()
    return 0, 0


async def _mid_headers_reset(port: int) -> tuple[int, int]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(_INC[:-3])
    abort(stream)
    await stream.aclose()
    return 0, 0


async def _mid_body(port: int) -> tuple[int, int]:
    # "name=d" has arrived, the rest of the declared body never will: must not count.
    body = f"name={COUNTER}&pad=never-sent".encode()
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(_INC_FORM_HEAD % len(body) + body[:7])
    await stream.aclose()
    return 0, 0


async def _after_request_close(port: int) -> tuple[int, int]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(_INC)
    await stream.aclose()
    return 0, 1


async def _after_request_reset(port: int) -> tuple[int, int]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(_INC)
    abort(stream)
    await stream.aclose()
    return 0, 1


async def _after_form_reset(port: int) -> tuple[int, int]:
    body = f"name={COUNTER}".encode()
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(_INC_FORM_HEAD % len(body) + body)
    abort(stream)
    await stream.aclose()
    return 0, 1


async def _half_close_then_read(port: int) -> tuple[int, int]:
    # Sends its request and shuts its sending side; hypercorn takes the EOF as a
    # disconnect, so the answer may or may not come.
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(_INC)
        await stream.send_eof()
        reply = await _read_at_least(stream, 12)
    return (1, 0) if _acknowledged(reply) else (0, 1)


async def _mid_reply(port: int) -> tuple[int, int]:
    # Reads the status line of the answer, then resets with the rest unread.
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(_INC)
    reply = await _read_at_least(stream, 12)
    abort(stream)
    await stream.aclose()
    return (1, 0) if _acknowledged(reply) else (0, 1)


async def _pipelined_then_reset(port: int) -> tuple[int, int]:
    # Two requests at once; reads the first answer whole, resets before the second.
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(_INC + _INC)
    received = b""
    while _parse_response(received) is None:
        chunk = await _read_at_least(stream, 1)
        if not chunk:
            break
        received += chunk
    abort(stream)
    await stream.aclose()
    first = _acknowledged(received)
    return (1, 1) if first else (0, 2)


STAGES: dict[str, Stage] = {
    "connect, close": _connect_then_close,
    "connect, reset": _connect_then_reset,
    "mid request line, close": _mid_request_line,
    "mid headers, reset": _mid_headers_reset,
    "mid body, close": _mid_body,
    "after the request, close": _after_request_close,
    "after the request, reset": _after_request_reset,
    "after a form request, reset": _after_form_reset,
    "half-close, then read": _half_close_then_read,
    "mid reply, reset": _mid_reply,
    "two pipelined, reset after the first answer": _pipelined_then_reset,
}


@pytest.mark.parametrize("strategy", SAFE_STRATEGIES)
async def test_disconnects_at_every_stage_under_load_never_add_or_lose_acknowledged_increments(
    nursery: trio.Nursery, strategy: str
) -> None:
    server = await start_server(nursery, strategy)
    assert (await request(server.port, f"/set?name={COUNTER}&val=0")).status == 200
    acknowledged = 0
    might_have_counted = 0
    per_stage: Counter[str] = Counter()
    disruptors_done = trio.Event()

    async def loader() -> None:
        nonlocal acknowledged
        while not disruptors_done.is_set():
            async with await Connection.open(server.port) as connection:
                while not disruptors_done.is_set() and connection.h11.our_state is not h11.MUST_CLOSE:
                    reply = await connection.request(f"/inc?name={COUNTER}")
                    assert reply.status == 200, reply
                    acknowledged += 1

    async def disruptor(offset: int) -> None:
        nonlocal acknowledged, might_have_counted
        stages = list(STAGES.items())
        for round_ in range(len(stages) * 4):
            stage_name, stage = stages[(offset + round_) % len(stages)]
            acked, maybe = await stage(server.port)
            acknowledged += acked
            might_have_counted += maybe
            per_stage[stage_name] += 1

    with trio.fail_after(45):
        async with trio.open_nursery() as clients:
            for _ in range(16):
                clients.start_soon(loader)
            async with trio.open_nursery() as disruptors:
                for offset in range(24):
                    disruptors.start_soon(disruptor, offset)
            disruptors_done.set()
        final = await value_of(server, COUNTER)
        assert (await request(server.port, "/get?name=i")).status == 200  # still serving
    assert final is not None
    print(
        f"{strategy}: {sum(per_stage.values())} disconnects over {len(per_stage)} stages; "
        f"acknowledged {acknowledged}, might have counted {might_have_counted}, final {final} "
        f"({final - acknowledged} of the unacknowledged counted)"
    )
    assert acknowledged <= final <= acknowledged + might_have_counted
    assert_no_traceback(server)


# --------------------------------------------------------------------------------------
# Faults: SIGINT twice under load


def worker_pid(server: Server) -> int:
    """hypercorn's worker process: the parent's child started by multiprocessing's spawn."""
    pid = server.process.pid
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        for child in children.read().split():
            try:
                with open(f"/proc/{child}/cmdline", "rb") as cmdline:
                    if b"spawn_main" in cmdline.read():
                        return int(child)
            except FileNotFoundError:
                continue
    raise AssertionError(f"no worker process under hypercorn's {pid}")


@pytest.mark.parametrize(
    ("strategy", "to"),
    [(strategy, "group") for strategy in SAFE_STRATEGIES] + [("lock", "parent")],
)
async def test_sigint_twice_under_load_still_ends_within_the_graceful_timeout(
    nursery: trio.Nursery, strategy: str, to: str
) -> None:
    """``to="group"`` is Ctrl-C in a terminal, which signals hypercorn's parent and its
    worker; ``"parent"`` is ``kill -INT``. Requests stuck waiting for a body keep the
    graceful shutdown busy until its timeout (1 s here, to keep the test short)."""
    server = await start_server(nursery, strategy, "--graceful-timeout", str(GRACEFUL_TIMEOUT))
    targets = [server.process.pid] + ([worker_pid(server)] if to == "group" else [])
    answered = 0
    statuses: Counter[int] = Counter()
    ended = 0
    loaded = trio.Event()
    first_close = trio.Event()

    async def client() -> None:
        nonlocal answered, ended
        try:
            async with await Connection.open(server.port) as connection:
                while True:
                    reply = await connection.request("/inc?name=i")
                    statuses[reply.status] += 1
                    answered += 1
                    if answered >= 300:
                        loaded.set()
        except (*_TRANSPORT_ERRORS, ConnectionError):
            ended += 1  # the server closed this connection as it shut down
            first_close.set()

    async def stuck() -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await stream.send_all(b"POST /inc HTTP/1.1\r\nHost: x\r\n" + _FORM + b"Content-Length: 50\r\n\r\nname")
            await _until_closed(stream)

    with trio.fail_after(30):
        async with trio.open_nursery() as clients:
            for _ in range(40):
                clients.start_soon(client)
            for _ in range(5):
                clients.start_soon(stuck)
            await loaded.wait()
            start = trio.current_time()
            for pid in targets:
                os.kill(pid, signal.SIGINT)
            await first_close.wait()  # shutting down: now the impatient second Ctrl-C
            for pid in targets:
                os.kill(pid, signal.SIGINT)
            code = await server.wait(timeout=GRACEFUL_TIMEOUT + PROMPT)
            took = trio.current_time() - start
    print(f"{strategy}, SIGINT x2 to the {to}: exit code {code} after {took:.2f} s; answers {dict(statuses)}")
    assert code == 0, server.log
    assert took <= GRACEFUL_TIMEOUT + PROMPT
    assert ended == 40  # every client saw its connection end; none hung
    assert set(statuses) <= {200, 503}, statuses
    assert_no_traceback(server)
