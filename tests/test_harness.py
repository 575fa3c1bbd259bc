"""The shared harness's launcher and process readings: :mod:`trio_counters.testing`.

The launcher tests that need a server to misbehave (ignore SIGTERM, exit at
once, never say where it listens) run a fake ``hypercorn`` package: the harness
starts ``python -m hypercorn``, and ``PYTHONPATH`` puts the fake first for that
one server. The worker and CPU tests run the real one.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import textwrap
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import trio

from trio_counters.testing import Connection, ServerError, cpu_seconds, rss_kib, run_server, serving

FakeHypercorn = Callable[[str], dict[str, str]]



def listening(setup: str = "") -> str:
    """A fake hypercorn that runs ``setup`` (signal handlers, say), then listens and
    says where, as hypercorn does, and sleeps until it is stopped."""
    return f"""
import signal, socket, sys, time
{textwrap.dedent(setup)}
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen()
sys.stdout.write("[INFO] Running on http://127.0.0.1:%d (CTRL + C to quit)\\n" % sock.getsockname()[1])
sys.stdout.flush()  # the line in one write, as logging does: a signal cannot split it
while True:
    time.sleep(1)
"""


@pytest.fixture
def fake_hypercorn(tmp_path: Path) -> FakeHypercorn:
    """Write ``code`` as the ``hypercorn`` that ``python -m hypercorn`` runs; the
    environment that makes the harness start it."""

    def install(code: str) -> dict[str, str]:
        package = tmp_path / "hypercorn"
        package.mkdir(exist_ok=True)
        (package / "__init__.py").write_text("")
        (package / "__main__.py").write_text(textwrap.dedent(code))
        return {"PYTHONPATH": str(tmp_path)}

    return install


def refuses(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


# --- starting and stopping ----------------------------------------------------------------


@pytest.mark.parametrize("ignore_term", [False, True])
async def test_serving_finds_the_port_and_always_stops_it(fake_hypercorn: FakeHypercorn, ignore_term: bool) -> None:
    env = fake_hypercorn(listening("signal.signal(signal.SIGTERM, signal.SIG_IGN)" if ignore_term else ""))
    with trio.fail_after(10):
        async with serving(env=env, stop_timeout=0.5) as server:
            assert server.host == "127.0.0.1" and not refuses(server.port)
            assert server.url == f"http://127.0.0.1:{server.port}"
        assert refuses(server.port)  # stopped: by SIGTERM, or by SIGKILL after the wait
    assert server.process.returncode == -(signal.SIGKILL if ignore_term else signal.SIGTERM)


async def test_a_server_that_exits_reports_its_code_and_log_tail(fake_hypercorn: FakeHypercorn) -> None:
    env = fake_hypercorn("""
        import sys
        for n in range(30):
            print("line", n)
        print("ConfigError: no good", file=sys.stderr)
        sys.exit(3)
    """)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            with pytest.raises(ServerError) as caught:
                await nursery.start(partial(run_server, env=env))
    error = caught.value
    assert error.returncode == 3 and "exited with code 3" in str(error)
    assert error.log_tail[-1] == "ConfigError: no good" and "line 29" in error.log_tail
    assert "line 0" not in error.log_tail  # only the tail


async def test_a_silent_server_times_out_and_is_stopped(fake_hypercorn: FakeHypercorn, tmp_path: Path) -> None:
    pid_file = tmp_path / "server.pid"
    env = fake_hypercorn(f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            with pytest.raises(ServerError, match="did not report its address within 0.3 s") as caught:
                await nursery.start(partial(run_server, env=env, startup_timeout=0.3))
    assert caught.value.returncode is None  # still running when given up on...
    assert not Path(f"/proc/{pid_file.read_text()}").exists()  # ...then stopped, and reaped


async def test_the_log_keeps_what_the_server_printed_while_stopping(fake_hypercorn: FakeHypercorn) -> None:
    env = fake_hypercorn(listening("""
        def stop(*_):
            print("shutting down: last words", flush=True)
            sys.exit(0)
        signal.signal(signal.SIGTERM, stop)
    """))
    with trio.fail_after(10):
        async with serving(env=env) as server:
            assert "last words" not in server.log
    assert server.process.returncode == 0
    assert server.tail(1) == ["shutting down: last words"]


# --- the worker and what it costs ---------------------------------------------------------


def _parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _holds_listener(pid: int, port: int) -> bool:
    """Whether process ``pid`` has the socket listening on ``port`` open."""
    inodes = {
        f"socket:[{fields[9]}]"
        for fields in (line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:])
        if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port
    }
    return any(os.readlink(fd) in inodes for fd in Path(f"/proc/{pid}/fd").iterdir())


@pytest.mark.parametrize("workers", ["1", "0"])
async def test_the_worker_is_the_process_that_serves_and_spends_the_cpu(workers: str) -> None:
    async with serving(args=("--workers", workers)) as server:
        worker = server.worker
        if workers == "0":  # the parent serves by itself
            assert worker == server.process.pid
        else:
            assert worker != server.process.pid and _parent_of(worker) == server.process.pid
            assert b"spawn_main" in Path(f"/proc/{worker}/cmdline").read_bytes()
        assert _holds_listener(worker, server.port)
        assert rss_kib(worker) > 10 * 1024  # a Python with Quart loaded, not an empty process
        before = cpu_seconds(worker)
        async with await Connection.open(server.port) as connection:
            for _ in range(300):
                assert (await connection.request("/inc?name=i")).status == 200
        assert cpu_seconds(worker) > before  # the requests were served, and paid for, there


def test_cpu_seconds_is_what_the_kernel_accounts() -> None:
    end = time.process_time() + 0.2
    while time.process_time() < end:  # burn some CPU
        pass
    times = os.times()
    low = times.user + times.system
    measured = cpu_seconds(os.getpid())
    times = os.times()
    high = times.user + times.system
    assert measured >= 0.2
    assert low - 0.02 <= measured <= high + 0.02


def test_rss_kib_is_resident_memory() -> None:
    before = rss_kib(os.getpid())
    block = bytearray(b"x" * (64 * 1024 * 1024))  # written, so resident
    after = rss_kib(os.getpid())
    assert after - before >= 48 * 1024
    assert after <= resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # the peak, in KiB on Linux
    del block
