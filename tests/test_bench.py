"""Unit tests for bench.py's parts: the client, the launcher, the statistics, the output.

The client runs against :class:`FakeCounterServer`, a tiny h11 server in the
test process on a port-0 loopback listener, with knobs for each way a server
can misbehave. Timeouts use small real deadlines (a few tenths of a second):
the client does real socket I/O, which an autojump clock would race past.
"""

from __future__ import annotations

import functools
import io
import json
import os
import signal
import socket
import sys
import textwrap
from pathlib import Path
from unittest import mock
from urllib.parse import parse_qs, urlsplit

import h11
import pytest
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # bench.py lives at the top, outside the package

import bench  # noqa: E402
from benchmarks.client import (  # noqa: E402
    FAILURE_KINDS,
    ClientError,
    LoadStats,
    Target,
    read_counter,
    run_load,
    set_counter,
)
from benchmarks.server import ServerError, cpu_seconds, running_server, worker_pid  # noqa: E402
from benchmarks.stats import Row, format_table, lost_updates, percentile, summarise, to_json  # noqa: E402


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


# --- statistics -------------------------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0) == 1
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2
    assert percentile([7.0], 99) == 7
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_lost_updates_is_succeeded_minus_the_increase() -> None:
    assert lost_updates(succeeded=5000, initial=0, final=3012) == 1988
    assert lost_updates(succeeded=100, initial=50, final=150) == 0
    assert lost_updates(succeeded=0, initial=0, final=4) == -4
    assert lost_updates(succeeded=10, initial=0, final=None) is None


def make_stats(latencies: list[float], **failures: int) -> LoadStats:
    stats = LoadStats(latencies=latencies, started=10.0, finished=12.0)
    stats.failures.update(failures)
    return stats


def test_summarise_turns_measurements_into_a_row() -> None:
    stats = make_stats([0.001 * v for v in range(1, 101)], status=3, timeout=1)
    row = summarise("lock", stats, planned=104, initial=0, final=100)
    assert (row.requests, row.succeeded, row.failed, row.lost) == (104, 100, 4, 0)
    assert row.req_per_s == pytest.approx(50.0)
    assert row.latencies_ms == pytest.approx({"p50": 50.0, "p99": 99.0, "max": 100.0})


def sample_rows() -> list[Row]:
    naive = summarise("naive", make_stats([0.002] * 1000), planned=1000, initial=0, final=212)
    lock = summarise("lock", make_stats([0.004] * 998, status=2), planned=1000, initial=0, final=998)
    bare = summarise("bare", make_stats([0.001] * 1000), planned=1000, initial=0, final=1000, reference=True)
    return [naive, lock, bare]


def test_table_shows_each_rate_against_naive_only_when_naive_ran() -> None:
    naive, lock, bare = sample_rows()
    lock.elapsed_s *= 2  # half naive's rate
    assert format_table([naive, lock, bare]).splitlines()[3].split()[6] == "0.50"
    without_naive = format_table([lock, bare]).splitlines()
    assert [line.split()[6] for line in without_naive[2:4]] == ["-", "-"]


def test_table_has_one_aligned_line_per_row_and_explains_itself() -> None:
    text = format_table(sample_rows(), note="the note")
    lines = text.splitlines()
    assert lines[0].split() == [
        "strategy", "requests", "failed", "final", "lost", "req/s", "x", "naive", "p50", "ms", "p99", "ms", "max", "ms"
    ]  # fmt: skip
    assert lines[2].split() == ["naive", "1,000", "0", "212", "788", "500", "1.00", "2.0", "2.0", "2.0"]
    assert lines[3].split() == ["lock", "1,000", "2", "998", "0", "499", "1.00", "4.0", "4.0", "4.0"]
    assert lines[4].split()[:7] == ["bare*", "1,000", "0", "1,000", "0", "500", "1.00"]
    assert len({len(line) for line in lines[:5]}) == 1  # columns line up
    assert any(line.startswith("* reference ceiling") for line in lines)
    assert "lock failures: 2 status" in lines
    assert lines[-1] == "the note"


def test_table_warns_when_the_client_may_have_been_the_limit() -> None:
    calm = make_stats([0.001] * 10)
    calm.cpu_s = 0.5  # of a 2 s run
    busy = make_stats([0.001] * 10)
    busy.cpu_s = 1.9
    rows = [summarise(name, stats, planned=10, initial=0, final=10) for name, stats in (("calm", calm), ("busy", busy))]
    warnings = [line for line in format_table(rows).splitlines() if "client was on the CPU" in line]
    assert warnings == [
        "busy: the client was on the CPU 95% of the run, so these figures may be the client's limit,"
        " not the server's (is the machine busy?)"
    ]
    assert to_json(rows, {})["results"][1]["client_cpu_s"] == 1.9


def test_table_marks_interrupted_rows_and_unknown_values() -> None:
    row = summarise("lock", make_stats([]), planned=10, initial=0, final=None, interrupted=True, error="final count unknown: x")
    text = format_table([row])
    assert "lock (stopped)" in text and "lock: final count unknown: x" in text
    assert text.splitlines()[2].split() == ["lock", "(stopped)", "0", "0", "-", "-", "0", "-", "-", "-", "-"]


def test_json_document_has_every_documented_field() -> None:
    args = bench.parse_args(["-n", "1000"])
    document = json.loads(json.dumps(to_json(sample_rows(), bench.config_of(args))))
    assert document["version"] == 1
    assert document["config"] == {
        "mode": "keepalive", "requests": 1000, "concurrency": 200, "timeout_s": 10.0,
        "name": "i", "url": None, "strategies": ["naive", "lock", "channel", "bare"],
    }  # fmt: skip
    naive, lock, bare = document["results"]
    assert naive["lost"] == 788 and naive["failed"] == 0 and naive["reference"] is False
    assert lock["failures"] == {**no_failures(), "status": 2} and lock["requests"] == 1000
    assert bare["reference"] is True and bare["req_per_s"] == 500.0
    assert set(bare["latency_ms"]) == {"p50", "p99", "max"}
    for key in [*document, *document["config"], *naive]:  # --help documents each field
        assert key in bench.EPILOG, key


# --- the command line -------------------------------------------------------------------


def test_defaults() -> None:
    args = bench.parse_args([])
    assert (args.requests, args.concurrency, args.mode, args.timeout) == (5000, 200, "keepalive", 10.0)
    assert args.strategies == ("naive", "lock", "channel", "bare") and args.url is None


def test_strategies_are_parsed_in_order_without_repeats() -> None:
    assert bench.parse_args(["--strategies", "lock, naive,lock"]).strategies == ("lock", "naive")


@pytest.mark.parametrize(
    "argv",
    [
        ["-n", "0"],
        ["-c", "-3"],
        ["-n", "many"],
        ["--mode", "pipelined"],
        ["--timeout", "0"],
        ["--strategies", "naive,fast"],
        ["--url", "http://192.168.1.1:8000"],
        ["--url", "http://127.0.0.1:8000", "--strategies", "lock"],
        ["--bogus"],
    ],
)
def test_bad_arguments_get_argparse_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        bench.parse_args(argv)
    assert caught.value.code == 2
    assert capsys.readouterr().err.startswith("usage: bench.py")


def test_help_reads_well(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench.parse_args(["--help"])
    text = capsys.readouterr().out
    for phrase in ("keepalive", "The default", "--json", "lost", "--plot", "--url", "reference ceiling"):
        assert phrase in text


def test_plot_without_matplotlib_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    with mock.patch.object(bench.importlib.util, "find_spec", return_value=None):
        assert bench.main(["--plot", "out.png"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "matplotlib" in err and "pip install" in err


def test_plot_draws_throughput_and_lost_updates(tmp_path: Path) -> None:
    fig, left, right = mock.MagicMock(), mock.MagicMock(), mock.MagicMock()
    pyplot = mock.MagicMock()
    pyplot.subplots.return_value = (fig, (left, right))
    matplotlib = mock.MagicMock(pyplot=pyplot)
    with mock.patch.dict(sys.modules, {"matplotlib": matplotlib, "matplotlib.pyplot": pyplot}):
        bench.plot(sample_rows(), str(tmp_path / "out.png"))
    assert left.bar.call_args.args == (["naive", "lock", "bare*"], [500.0, 499.0, 500.0])
    assert right.bar.call_args.args == (["naive", "lock", "bare*"], [788, 0, 0])
    fig.savefig.assert_called_once_with(str(tmp_path / "out.png"), dpi=100)


# --- the orchestration, against an in-process server via --url ---------------------------


async def test_url_run_reads_before_and_after_without_resetting(fake_server) -> None:  # type: ignore[no-untyped-def]
    server, target = await fake_server()
    server.value = 1000
    session = bench.Session(bench.parse_args(["--url", target.url, "-n", "50", "-c", "5"]))
    await bench.run_session(session)
    (row,) = session.rows
    assert (row.strategy, row.initial, row.final, row.lost, row.failed) == (target.url, 1000, 1050, 0, 0)


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


# --- the server launcher ----------------------------------------------------------------


def python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


FAKE_HYPERCORN = """
    import signal, socket, sys, time
    if {ignore_term}:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    print("[INFO] Running on http://127.0.0.1:%d (CTRL + C to quit)" % sock.getsockname()[1], flush=True)
    while True:
        time.sleep(1)
"""


def refuses(target: Target) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((target.host, target.port)) != 0


@pytest.mark.parametrize("ignore_term", [False, True])
async def test_running_server_finds_the_port_and_always_stops_it(ignore_term: bool) -> None:
    command = python(FAKE_HYPERCORN.format(ignore_term=ignore_term))
    with trio.fail_after(10):
        async with running_server(command, stop_timeout=0.5) as target:
            assert target.host == "127.0.0.1" and not refuses(target)
        assert refuses(target)  # stopped: by SIGTERM, or by SIGKILL after the wait


async def test_worker_pid_finds_the_child_that_shares_the_listening_socket(tmp_path: Path) -> None:
    pid_file = tmp_path / "worker.pid"
    command = python(f"""
        import os, socket, time
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        child = os.fork()
        if child == 0:  # the worker: holds the socket, as hypercorn's does
            time.sleep(60)
            os._exit(0)
        open({str(pid_file)!r}, "w").write(str(child))
        print("[INFO] Running on http://127.0.0.1:%d (CTRL + C to quit)" % sock.getsockname()[1], flush=True)
        while True:
            time.sleep(1)
    """)
    with trio.fail_after(10):
        async with running_server(command, stop_timeout=0.5) as target:
            worker = int(pid_file.read_text())
            assert worker_pid(target) == worker
            assert cpu_seconds(worker) >= 0


async def test_a_server_that_exits_reports_its_code_and_log_tail() -> None:
    command = python("""
        import sys
        for n in range(30):
            print("line", n)
        print("ConfigError: no good", file=sys.stderr)
        sys.exit(3)
    """)
    with trio.fail_after(10), pytest.raises(ServerError) as caught:
        async with running_server(command):
            pytest.fail("it never listened")  # pragma: no cover
    error = caught.value
    assert error.returncode == 3 and "exited with code 3" in str(error)
    assert error.log_tail[-1] == "ConfigError: no good" and "line 29" in error.log_tail
    assert "line 0" not in error.log_tail  # only the tail


async def test_a_silent_server_times_out_and_is_stopped() -> None:
    command = python("import time; time.sleep(60)")
    with trio.fail_after(10), pytest.raises(ServerError, match="did not report its address within 0.3 s"):
        async with running_server(command, startup_timeout=0.3):
            pytest.fail("it never listened")  # pragma: no cover


async def _call_asgi(app, query: str, path: str = "/inc") -> tuple[int, str]:  # type: ignore[no-untyped-def]
    """One GET through a bare ASGI app, in process; (status, body)."""
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "query_string": query.encode()}
    await app(scope, receive, send)
    return int(sent[0]["status"]), bytes(sent[1]["body"]).decode()  # type: ignore[call-overload]


@pytest.mark.parametrize("entry", ["app", "unguarded_app"])
async def test_bare_apps_count_every_concurrent_increment_and_refuse_bad_input(entry: str) -> None:
    from benchmarks import bare_asgi

    app = getattr(bare_asgi, entry)
    assert await _call_asgi(app, "name=k&val=0", "/set") == (200, "ok\n")
    async with trio.open_nursery() as nursery:
        for _ in range(200):
            nursery.start_soon(_call_asgi, app, "name=k")
    assert await _call_asgi(app, "name=k", "/get") == (200, "k: 200\n")
    assert (await _call_asgi(app, "name=missing"))[0] == 404
    assert (await _call_asgi(app, "name=k&val=x", "/set"))[0] == 400
    assert await _call_asgi(app, "name=k", "/get") == (200, "k: 200\n")  # refusals changed nothing
