"""What the trio transport costs: hypercorn's stock trio TCPServer against ours.

Run from the repository root, after ``pip install -e .``::

    python benchmarks/transport.py            # about 3 minutes
    python benchmarks/transport.py --runs 1 --duration 2

It starts seven real ``hypercorn --worker-class trio`` servers on free loopback
ports (no fixed port, no sleep: each one's port is read from its "Running on"
line) and loads each with ``wrk -t1`` over keep-alive connections, ``GET
/inc?name=j``, at each concurrency (10 and 200), round-robin, ``--runs`` times:

=============  =====================================================  =========
row            app                                                     transport
=============  =====================================================  =========
plain          benchmarks/plain_quart.py: QuartTrio, dict update,      stock
               ``return "ok"`` (what a user writes by hand)
ours/stock     trio_counters:app, default (lock) store                 stock
ours/fast      trio_counters:app, default (lock) store                 fast
bare/stock     benchmarks/bare_asgi.py ``unguarded_app``: no           stock
               framework; read and write with no await between (atomic
               in trio): the transport's ceiling
bare/fast      the same                                                fast
bare+lock/...  benchmarks/bare_asgi.py ``app``: bench.py's ceiling,    both
               lock-guarded like the lock strategy (reference rows)
=============  =====================================================  =========

It prints the median req/s of the runs, the server's CPU time per request
(the hypercorn worker's user+system time over the run divided by the requests:
steadier than req/s on a shared machine), and the ratios the issue sets targets
for: our default server >= 1.35x plain at C=200; bare ASGI on the fast
transport >= 2x on stock. It exits 1 if a target is missed (2 without wrk). The ceiling is the unguarded app because a lock held
across a checkpoint costs the same on both transports under load (one holder per
scheduling round) and so hides part of what the transport costs; the
lock-guarded pair is printed beside it for that comparison. wrk must be on PATH. Loopback only; every server is
stopped (SIGTERM, then SIGKILL to its process group) however the run ends.

hypercorn's worker loads ``benchmarks/transport.py:served("bare")``, which
(or ``"bare+lock"``, ``"plain"``) installs the transport named by
``TRIO_COUNTERS_TRANSPORT`` in the worker
before it serves (trio_counters:app does that itself on import).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.server import cpu_seconds  # noqa: E402

HERE = Path(__file__).resolve()
BACKLOG = 1024  # hypercorn's default of 100 drops connects when 200 clients start at once
STARTUP_TIMEOUT = 30.0
PATH = "/inc?name=j"
TARGET_OURS_VS_PLAIN = 1.35
TARGET_BARE_FAST_VS_STOCK = 2.0


def served(name: str) -> Any:
    """The app for hypercorn's worker, with the transport ``TRIO_COUNTERS_TRANSPORT`` names."""
    if os.environ.get("TRIO_COUNTERS_TRANSPORT", "").strip().lower() == "fast":
        from trio_counters.transport import install

        if not install(True):
            raise SystemExit("the fast transport could not be installed")
    if name == "plain":
        from plain_quart import app  # benchmarks/ is on sys.path: hypercorn put it there
    elif name == "bare":
        from bare_asgi import unguarded_app as app
    elif name == "bare+lock":
        from bare_asgi import app
    else:
        raise ValueError(name)
    return app


@dataclass(frozen=True)
class Config:
    label: str
    app: str
    transport: str


CONFIGS = (
    Config("plain", f'{HERE}:served("plain")', "stock"),
    Config("ours/stock", "trio_counters:app", "stock"),
    Config("ours/fast", "trio_counters:app", "fast"),
    Config("bare/stock", f'{HERE}:served("bare")', "stock"),
    Config("bare/fast", f'{HERE}:served("bare")', "fast"),
    Config("bare+lock/stock", f'{HERE}:served("bare+lock")', "stock"),
    Config("bare+lock/fast", f'{HERE}:served("bare+lock")', "fast"),
)


class BenchError(Exception):
    pass


@dataclass
class Server:
    config: Config
    process: subprocess.Popen[bytes]
    port: int = 0
    log: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    def worker_pid(self) -> int:
        """hypercorn's spawned worker: the child running ``spawn_main``."""
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.process.pid and b"spawn_main" in cmdline:
                return int(entry.name)
        raise BenchError(f"{self.config.label}: no hypercorn worker process found")


def start(config: Config) -> Server:
    env = dict(os.environ, TRIO_COUNTERS_TRANSPORT=config.transport, PYTHONUNBUFFERED="1")
    command = [
        sys.executable, "-m", "hypercorn",
        "--worker-class", "trio",
        "--bind", "127.0.0.1:0",
        "--backlog", str(BACKLOG),
        config.app,
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    server = Server(config, process)
    ready = threading.Event()

    def read_log() -> None:
        assert process.stderr is not None
        for raw in process.stderr:
            line = raw.decode(errors="replace").rstrip()
            server.log.append(line)
            match = re.search(r"Running on http://127\.0\.0\.1:(\d+)", line)
            if match and not ready.is_set():
                server.port = int(match[1])
                ready.set()
        ready.set()

    threading.Thread(target=read_log, daemon=True).start()
    if not ready.wait(STARTUP_TIMEOUT) or not server.port:
        stop(server)
        raise BenchError(f"{config.label} did not start:\n  " + "\n  ".join(server.log[-10:]))
    return server


def stop(server: Server) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(10)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(server.process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    server.process.wait()


@dataclass
class Sample:
    rps: float
    requests: int
    errors: int
    cpu_us: float


def wrk(server: Server, connections: int, duration: float) -> Sample:
    pid = server.worker_pid()
    before = cpu_seconds(pid)
    result = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", server.url],
        capture_output=True,
        text=True,
        timeout=duration + 30,
    )
    after = cpu_seconds(pid)
    out = result.stdout
    rps = re.search(r"Requests/sec:\s*([\d.]+)", out)
    requests = re.search(r"(\d+) requests in", out)
    if result.returncode != 0 or rps is None or requests is None:
        raise BenchError(f"wrk failed on {server.config.label}: {out}{result.stderr}")
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    if non2xx:
        errors += int(non2xx[1])
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    count = int(requests[1])
    return Sample(float(rps[1]), count, errors, (after - before) * 1e6 / max(count, 1))


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs ({model}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}; load average at start {load}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per row and concurrency (3)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run (3)")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[10, 200], help="keep-alive connections"
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not on PATH (apt-get install wrk)", file=sys.stderr)
        return 2
    from trio_counters.transport import DEFAULT_TRANSPORT

    print(f"machine: {machine()}")
    print(
        f"load: wrk -t1, keep-alive, GET {PATH}, {args.duration:g} s per run, "
        f"median of {args.runs}; trio_counters' default transport: {DEFAULT_TRANSPORT}"
    )
    samples: dict[tuple[str, int], list[Sample]] = {}
    servers: list[Server] = []
    started = time.monotonic()
    try:
        for config in CONFIGS:
            servers.append(start(config))
        for server in servers:  # warm up: imports, first connections, caches
            wrk(server, max(args.concurrency), 1)
        for run in range(args.runs):
            for connections in args.concurrency:
                for server in servers:
                    sample = wrk(server, connections, args.duration)
                    samples.setdefault((server.config.label, connections), []).append(sample)
            print(f"  run {run + 1}/{args.runs} done ({time.monotonic() - started:.0f} s)", flush=True)
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        for server in servers:
            stop(server)

    median: dict[tuple[str, int], float] = {}
    median_cpu: dict[tuple[str, int], float] = {}
    for connections in args.concurrency:
        print(f"\nC={connections}")
        print(f"  {'row':<15} {'req/s (median)':>14}   {'runs':<26} {'CPU us/req':>10} {'errors':>6}")
        for config in CONFIGS:
            runs = samples[(config.label, connections)]
            rps = statistics.median(s.rps for s in runs)
            median[(config.label, connections)] = rps
            cpu = statistics.median(s.cpu_us for s in runs)
            median_cpu[(config.label, connections)] = cpu
            listed = " ".join(f"{s.rps:.0f}" for s in runs)
            errors = sum(s.errors for s in runs)
            print(f"  {config.label:<15} {rps:>14.0f}   {listed:<26} {cpu:>10.0f} {errors:>6}")

    default = f"ours/{DEFAULT_TRANSPORT}"
    print(
        "\nratios A / B: of median req/s (what the targets are set on) and, in brackets, of"
        "\nserver CPU per request, B's over A's (capacity; less disturbed by other load)"
    )
    failures = 0
    for connections in args.concurrency:

        def ratio(a: str, b: str) -> tuple[float, float]:
            return (
                median[(a, connections)] / median[(b, connections)],
                median_cpu[(b, connections)] / median_cpu[(a, connections)],
            )

        lines = [
            ("ours/stock / plain", ratio("ours/stock", "plain"), None),
            ("ours/fast  / plain", ratio("ours/fast", "plain"), None),
            ("ours/fast  / ours/stock", ratio("ours/fast", "ours/stock"), None),
            ("bare/stock / plain", ratio("bare/stock", "plain"), None),
            (
                "bare/fast  / bare/stock",
                ratio("bare/fast", "bare/stock"),
                TARGET_BARE_FAST_VS_STOCK,
            ),
            ("bare+lock/fast / bare+lock/stock", ratio("bare+lock/fast", "bare+lock/stock"), None),
            ("bare+lock/fast / bare/fast", ratio("bare+lock/fast", "bare/fast"), None),
        ]
        if connections == 200:
            lines.insert(
                0, (f"default ({default}) / plain", ratio(default, "plain"), TARGET_OURS_VS_PLAIN)
            )
        print(f"  C={connections}")
        for name, (value, capacity), target in lines:
            verdict = ""
            if target is not None:
                met = value >= target
                failures += not met
                verdict = f"  target >= {target:g}: {'met' if met else 'MISSED'}"
            print(f"    {name:<34} {value:5.2f}x  (CPU {capacity:4.2f}x){verdict}")
    print(f"\ntargets missed: {failures}; total {time.monotonic() - started:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
