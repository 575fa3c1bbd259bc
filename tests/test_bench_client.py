"""bench.py's load client against a fake counter server, and bench.py's session through it.

The client runs against :class:`FakeCounterServer`, a tiny h11 server in the
test process on a port-0 loopback listener, with knobs for each way a server
can misbehave. Timeouts use small real deadlines (a few tenths of a second):
the client does real socket I/O, which an autojump clock would race past.
"""

from __future__ import annotations

import functools
import io
import os
import signal
import socket
import subprocess
import sys
from urllib.parse import parse_qs, urlsplit

import h11
import pytest
import trio

import bench
from benchmarks.client import (
    FAILURE_KINDS,
    ClientError,
    LoadStats,
    Target,
    read_counter,
    run_load,
    set_counter,
)
from benchmarks.stats import lost_updates
from benchmarks.strategies import ROOT


class FakeCounterServer:
    """The counter API over h11, counting connections, with misbehaviour knobs."""

    def __init__(
        self,
        *,
        inc_status: int = 200,
        delay: float = 0.0,
        hang: bool = False,
        drop: bool = False,
        close_each: bool = False,
        ignore_close: bool = False,
    ) -> None:
        self.inc_status = inc_status  # status of every /inc answer
        self.delay = delay  # seconds before each /inc answer
        self.hang = hang  # /inc never answered
        self.drop = drop  # /inc: close the connection without answering
        self.close_each = close_each  # every answer says Connection: close
        self.ignore_close = ignore_close  # never close, even when the client asks
        self.value = 0
        self.connections = 0
        self.incs = 0
        self.asked_to_close = 0
        self.ten_answered = trio.Event()

    async def serve(self, *, task_status: trio.TaskStatus[Target] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        task_status.started(Target("127.0.0.1", port))
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while True:
                request = await self._next(conn, stream)
                if not isinstance(request, h11.Request):
                    return
                while not isinstance(await self._next(conn, stream), h11.EndOfMessage):
                    pass
                if conn.their_state is h11.MUST_CLOSE:
                    self.asked_to_close += 1
                status, body = await self._answer(request.target.decode())
                if status is None:
                    return  # drop
                headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
                if self.close_each:
                    headers.append(("Connection", "close"))
                data = conn.send(h11.Response(status_code=status, headers=headers))
                data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
                await stream.send_all(data)
                if conn.our_state is h11.MUST_CLOSE:
                    if self.ignore_close:
                        await trio.sleep_forever()
                    return
                conn.start_next_cycle()

    @staticmethod
    async def _next(conn: h11.Connection, stream: trio.SocketStream) -> object:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            try:
                conn.receive_data(await stream.receive_some(65536))
            except trio.BrokenResourceError:
                return None

    async def _answer(self, target: str) -> tuple[int | None, bytes]:
        parts = urlsplit(target)
        params = {key: values[0] for key, values in parse_qs(parts.query).items()}
        if parts.path == "/get":
            return 200, f"{params['name']}: {self.value}\n".encode()
        if parts.path == "/set":
            self.value = int(params["val"])
            return 200, b"ok\n"
        self.incs += 1
        if self.hang:
            await trio.sleep_forever()
        if self.drop:
            return None, b""
        if self.delay:
            await trio.sleep(self.delay)
        if 200 <= self.inc_status < 300:
            self.value += 1
        if self.incs >= 10:
            self.ten_answered.set()
        return self.inc_status, b"ok\n"


@pytest.fixture
async def fake_server(nursery: trio.Nursery):  # type: ignore[no-untyped-def]
    """Start a FakeCounterServer with the given knobs; it stops with the test."""

    async def start(**knobs: object) -> tuple[FakeCounterServer, Target]:
        server = FakeCounterServer(**knobs)  # type: ignore[arg-type]
        return server, await nursery.start(server.serve)

    return start


@pytest.fixture
def refused_target():  # type: ignore[no-untyped-def]
    """A loopback port that refuses connections: bound, so nobody else takes it, but not listening."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield Target("127.0.0.1", sock.getsockname()[1])
    sock.close()


def no_failures() -> dict[str, int]:
    return dict.fromkeys(FAILURE_KINDS, 0)


# --- the client: keep-alive and close modes --------------------------------------------


async def test_keepalive_reuses_one_connection_per_client(fake_server) -> None:  # type: ignore[no-untyped-def]
    server, target = await fake_server()
    stats = await run_load(target, requests=60, concurrency=4, mode="keepalive")
    assert (stats.succeeded, stats.failures) == (60, no_failures())
    assert server.value == 60 and server.connections == 4
    assert server.asked_to_close == 0
    assert stats.finished is not None and stats.elapsed() > 0
    assert 0 < stats.cpu_s < 10 * stats.elapsed()  # the client's own CPU time was measured


async def test_close_mode_opens_a_connection_per_request_and_asks_to_close(fake_server) -> None:  # type: ignore[no-untyped-def]
    server, target = await fake_server()
    stats = await run_load(target, requests=12, concurrency=3, mode="close")
    assert (stats.succeeded, stats.failures) == (12, no_failures())
    assert server.value == 12 and server.connections == 12 and server.asked_to_close == 12


async def test_keepalive_reconnects_when_the_server_closes_each_connection(fake_server) -> None:  # type: ignore[no-untyped-def]
    server, target = await fake_server(close_each=True)
    stats = await run_load(target, requests=10, concurrency=2, mode="keepalive")
    assert (stats.succeeded, stats.failed) == (10, 0)
    assert server.connections == 10


async def test_more_clients_than_requests_starts_only_as_many_as_needed(fake_server) -> None:  # type: ignore[no-untyped-def]
    server, target = await fake_server()
    stats = await run_load(target, requests=3, concurrency=50)
    assert stats.succeeded == 3 and server.connections == 3


async def test_latency_covers_the_server_time(fake_server) -> None:  # type: ignore[no-untyped-def]
    _, target = await fake_server(delay=0.05)
    stats = await run_load(target, requests=6, concurrency=3)
    assert len(stats.latencies) == 6
    assert all(0.05 <= latency < 5 for latency in stats.latencies)


# --- the client: every failure is counted, nothing is retried --------------------------


@pytest.mark.parametrize("mode", ["keepalive", "close"])
async def test_non_2xx_answers_are_failures(fake_server, mode: str) -> None:  # type: ignore[no-untyped-def]
    server, target = await fake_server(inc_status=503)
    stats = await run_load(target, requests=8, concurrency=2, mode=mode)
    assert stats.succeeded == 0
    assert stats.failures == {**no_failures(), "status": 8}
    assert server.incs == 8  # not retried
    if mode == "keepalive":
        assert server.connections == 2  # an error status does not cost the connection


@pytest.mark.parametrize("mode", ["keepalive", "close"])
async def test_refused_connections_are_failures(refused_target: Target, mode: str) -> None:
    stats = await run_load(refused_target, requests=7, concurrency=3, mode=mode, timeout=5)
    assert stats.failures == {**no_failures(), "connect": 7}
    assert stats.succeeded == 0 and stats.done == 7


@pytest.mark.parametrize("mode", ["keepalive", "close"])
async def test_unanswered_requests_time_out(fake_server, mode: str) -> None:  # type: ignore[no-untyped-def]
    server, target = await fake_server(hang=True)
    with trio.fail_after(5):
        stats = await run_load(target, requests=4, concurrency=2, mode=mode, timeout=0.2)
    assert stats.failures == {**no_failures(), "timeout": 4}
    assert server.incs == 4


@pytest.mark.parametrize("mode", ["keepalive", "close"])
async def test_a_connection_dropped_mid_request_is_an_io_failure(fake_server, mode: str) -> None:  # type: ignore[no-untyped-def]
    _, target = await fake_server(drop=True)
    stats = await run_load(target, requests=5, concurrency=2, mode=mode, timeout=5)
    assert stats.failures == {**no_failures(), "io": 5}


async def test_close_mode_catches_a_server_that_never_closes(fake_server) -> None:  # type: ignore[no-untyped-def]
    server, target = await fake_server(ignore_close=True)
    with trio.fail_after(5):
        stats = await run_load(target, requests=4, concurrency=4, mode="close", timeout=0.3)
    assert stats.failures == {**no_failures(), "unclosed": 4}
    assert server.value == 4  # applied, yet failed: lost reads -4, as documented
    assert lost_updates(stats.succeeded, 0, server.value) == -4


async def test_cancelling_a_run_keeps_what_it_measured(fake_server) -> None:  # type: ignore[no-untyped-def]
    _, target = await fake_server(delay=0.01)
    stats = LoadStats()
    with trio.move_on_after(0.3):
        await run_load(target, requests=100_000, concurrency=4, stats=stats)
    assert 0 < stats.done < 100_000
    assert stats.finished is not None


async def test_run_load_rejects_nonsense(fake_server) -> None:  # type: ignore[no-untyped-def]
    _, target = await fake_server()
    with pytest.raises(ValueError):
        await run_load(target, requests=1, concurrency=1, mode="pipelined")
    with pytest.raises(ValueError):
        await run_load(target, requests=1, concurrency=0)


# --- control requests and URLs ----------------------------------------------------------


async def test_read_and_set_counter(fake_server) -> None:  # type: ignore[no-untyped-def]
    server, target = await fake_server()
    await set_counter(target, "i", 41)
    assert server.value == 41
    assert await read_counter(target, "i") == 41


async def test_read_counter_explains_a_missing_counter(nursery: trio.Nursery) -> None:
    async def not_found(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        while not isinstance(event := conn.next_event(), h11.EndOfMessage):
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
        body = b"x not found\n"
        await stream.send_all(
            conn.send(h11.Response(status_code=404, headers=[("Content-Length", str(len(body)))]))
            + conn.send(h11.Data(data=body))
            + conn.send(h11.EndOfMessage())
        )
        await stream.aclose()

    listeners = await nursery.start(functools.partial(trio.serve_tcp, not_found, 0, host="127.0.0.1"))
    target = Target("127.0.0.1", listeners[0].socket.getsockname()[1])
    with pytest.raises(ClientError, match="does not exist"):
        await read_counter(target, "x")
    with pytest.raises(ClientError) as caught:
        await read_counter(target, "a&b")  # the hint must create this name, not 'a'
    assert str(caught.value).endswith("create it with /set?name=a%26b&val=0")


async def test_an_unreachable_server_is_a_one_line_client_error(refused_target: Target) -> None:
    with pytest.raises(ClientError) as caught:
        await read_counter(refused_target, "i")
    assert str(caught.value) == f"cannot connect to {refused_target.url}: Connection refused"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8000", Target("127.0.0.1", 8000)),
        ("http://localhost:8000/", Target("127.0.0.1", 8000)),
        ("http://127.0.0.2:9/api/", Target("127.0.0.2", 9, "/api")),
        ("http://[::1]:8000", Target("::1", 8000)),
        ("http://127.0.0.1", Target("127.0.0.1", 80)),
    ],
)
def test_target_from_loopback_urls(url: str, expected: Target) -> None:
    assert Target.from_url(url) == expected


@pytest.mark.parametrize(
    "url", ["http://10.0.0.1:8000", "http://example.com", "https://127.0.0.1:8000", "127.0.0.1:8000", "http://127.0.0.1:8000/?a=1"]
)
def test_target_refuses_anything_but_loopback_http(url: str) -> None:
    with pytest.raises(ClientError):
        Target.from_url(url)


def test_target_builds_quoted_request_targets() -> None:
    target = Target("::1", 8000, "/api")
    assert target.authority == "[::1]:8000"
    assert target.target("/inc", name="a b&c") == "/api/inc?name=a%20b%26c"


# --- bench.py's session, against the fake server via --url -------------------------------


async def test_url_run_reads_before_and_after_without_resetting(fake_server) -> None:  # type: ignore[no-untyped-def]
    server, target = await fake_server()
    server.value = 1000
    session = bench.Session(bench.parse_args(["--url", target.url, "-n", "50", "-c", "5"]))
    await bench.run_session(session)
    (row,) = session.rows
    assert (row.strategy, row.initial, row.final, row.lost, row.failed) == (target.url, 1000, 1050, 0, 0)


async def bench_py(*args: str) -> subprocess.CompletedProcess[bytes]:
    """``python bench.py ARGS`` as a user runs it (it needs the main thread for Ctrl-C)."""
    return await trio.run_process(
        [sys.executable, "bench.py", *args], cwd=ROOT, capture_stdout=True, capture_stderr=True, check=False
    )


async def test_the_table_names_the_clients_that_ran_not_those_asked_for(fake_server) -> None:  # type: ignore[no-untyped-def]
    _, target = await fake_server()
    done = await bench_py("--url", target.url, "-n", "5", "-c", "50")
    assert done.returncode == 0, done.stderr
    assert b"5 increments of 'i' per server from 5 clients" in done.stdout


async def test_a_run_where_every_request_failed_exits_1(fake_server) -> None:  # type: ignore[no-untyped-def]
    _, target = await fake_server(inc_status=503)
    done = await bench_py("--url", target.url, "-n", "20", "-c", "4")
    assert done.returncode == 1
    assert f"bench.py: every request to {target.url} failed".encode() in done.stderr


async def test_progress_bar_draws_and_erases_itself(fake_server) -> None:  # type: ignore[no-untyped-def]
    _, target = await fake_server(delay=0.02)
    out = io.StringIO()
    session = bench.Session(bench.parse_args(["--url", target.url, "-n", "40", "-c", "2"]), progress=out)
    await bench.run_session(session)
    text = out.getvalue()
    assert "/40" in text and "req/s" in text and "[" in text
    assert text.endswith("\r\x1b[K")


async def test_ctrl_c_stops_the_run_and_keeps_the_row(fake_server, nursery: trio.Nursery) -> None:  # type: ignore[no-untyped-def]
    server, target = await fake_server(delay=0.01)
    session = bench.Session(bench.parse_args(["--url", target.url, "-n", "1000000", "-c", "4"]))
    done = trio.Event()

    async def run() -> None:
        await bench.run_until_interrupted(session)
        done.set()

    nursery.start_soon(run)
    with trio.fail_after(10):
        await server.ten_answered.wait()  # the load is running, so the SIGINT receiver is up
        os.kill(os.getpid(), signal.SIGINT)
        await done.wait()
    assert session.interrupted
    (row,) = session.rows
    assert row.interrupted and 0 < row.requests < 1_000_000
    assert row.final is not None and row.final >= row.succeeded
