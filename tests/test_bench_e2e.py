"""End-to-end: ``python bench.py`` as users run it, against real hypercorn servers.

Sizes are small (a few hundred requests) to keep the file to a few seconds per
test. naive's loss is a certainty here, not a matter of luck: with 50 clients
at once, the store's read-checkpoint-write interleaves concurrent increments.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import trio

from trio_counters.testing import serving

ROOT = Path(__file__).resolve().parent.parent
BENCH = [sys.executable, str(ROOT / "bench.py")]


def bench(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BENCH, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
        env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_every_strategy_and_the_ceiling_naive_loses_the_others_do_not() -> None:
    done = bench("-n", "400", "-c", "50", "--json")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no progress bar when stderr is not a terminal
    results = {row["strategy"]: row for row in json.loads(done.stdout)["results"]}
    assert list(results) == ["naive", "lock", "channel", "bare"]
    naive = results.pop("naive")
    assert naive["failed"] == 0 and naive["succeeded"] == 400
    assert naive["lost"] > 0 and naive["final"] == 400 - naive["lost"]
    for name, row in results.items():
        assert (row["failed"], row["lost"], row["final"]) == (0, 0, 400), (name, row)
        assert row["req_per_s"] > 0 and row["latency_ms"]["p50"] <= row["latency_ms"]["max"]
        assert row["reference"] is (name == "bare")


def test_close_mode_table_real_servers_close_every_connection() -> None:
    done = bench("--strategies", "lock,bare", "--mode", "close", "-n", "300", "-c", "30", "--timeout", "5")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:5] == ["strategy", "requests", "failed", "final", "lost"]
    assert lines[2].split()[:5] == ["lock", "300", "0", "300", "0"]  # no 'unclosed': the core's fix
    assert lines[3].split()[:5] == ["bare*", "300", "0", "300", "0"]  # a bare app needs no fix
    assert "a new connection per request" in lines[-1]


async def test_url_loads_the_readme_server_without_resetting_it() -> None:
    async with serving(env={"TRIO_COUNTERS_STORE": "lock"}) as target:
        runs = []
        for _ in range(2):
            done = await trio.run_process(
                [*BENCH, "--url", target.url, "-n", "300", "-c", "30", "--json", "--name", "j"],
                capture_stdout=True, capture_stderr=True, check=False,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            runs.append(json.loads(done.stdout)["results"][0])
    first, second = runs
    assert (first["initial"], first["final"], first["lost"], first["failed"]) == (0, 300, 0, 0)
    assert (second["initial"], second["final"]) == (300, 600)
    assert first["strategy"] == target.url


def test_a_refused_url_is_one_line_not_a_traceback() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        done = bench("--url", url)
    assert done.returncode == 1
    assert done.stderr == f"bench.py: cannot connect to {url}: Connection refused\n"
    assert done.stdout == ""


def test_a_server_that_fails_to_start_is_reported_with_its_log() -> None:
    done = bench("--strategies", "lock", env=dict(os.environ, TRIO_COUNTERS_MAX_COUNTERS="0"))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr.splitlines()[0]
    assert "exited with code" in done.stderr and "its last log lines" in done.stderr
    assert "ConfigError" in done.stderr  # the server's own reason, from its log tail


def _children(pid: int) -> set[int]:
    """pid's descendants, from /proc (children are listed by the thread that forked them)."""
    found: set[int] = set()
    for listing in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            direct = listing.read_text().split()
        except FileNotFoundError:  # that thread has ended
            continue
        for child in map(int, direct):
            found |= {child} | _children(child)
    return found


_PROGRESSED = re.compile(rb"\] +[1-9][0-9,]*/10,000,000 ")


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_ctrl_c_on_a_terminal_stops_the_server_and_prints_the_partial_table() -> None:
    """Progress shows on a terminal; Ctrl-C prints what was measured and leaves no server."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [*BENCH, "--strategies", "lock", "-n", "10000000"],
        stdout=subprocess.PIPE, stderr=terminal, stdin=subprocess.DEVNULL, text=True, cwd=ROOT,
    )  # fmt: skip
    os.close(terminal)
    try:
        screen, deadline = b"", time.monotonic() + 60
        while not _PROGRESSED.search(screen):  # the progress bar shows requests done
            ready, _, _ = select.select([controller], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"no progress within 60 s: {screen!r}"
            screen += os.read(controller, 4096)  # EIO here means bench.py ended: a failure too
        servers = _children(process.pid)
        assert servers, "bench.py should have started hypercorn"
        process.send_signal(signal.SIGINT)
        stdout, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(controller)
    assert process.returncode == 130
    row = stdout.splitlines()[2].split()
    assert row[:2] == ["lock", "(stopped)"] and int(row[2].replace(",", "")) > 0
    assert row[3] == "0"  # failed: the in-flight requests were cut off, not counted
    assert not any(_alive(pid) for pid in servers)
