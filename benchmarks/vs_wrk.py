"""Hold bench.py's client against wrk: same server, same endpoint, same connections.

    .venv/bin/python -m benchmarks.vs_wrk [--strategy lock] [--duration 5] [--rounds 5] [-c 200]

Starts one server (as bench.py does), then per round runs ``wrk -t1 -c200
-dSECONDS`` and ``bench.py --url ... --mode keepalive -c 200`` against it, both
on ``/inc?name=i``, and prints each one's req/s and the ratio bench/wrk. The
target is a ratio of at least 0.9: bench.py's figures are only worth something
if its own client is not what limits them. Each bench.py run is sized from the
round's wrk rate to last about as long. A 1 s wrk run warms the server up
first, and the order alternates between rounds so neither tool always goes
first; the median of the rounds' ratios is the figure, because the server's
own rate drifts from run to run on a shared machine. wrk cannot count lost
updates; only throughput is compared here.

wrk is Debian's ``wrk`` package (``apt-get install wrk``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from dataclasses import dataclass

import trio

from trio_counters.testing import ServerError

from . import wrk
from .strategies import ROOT, leaves, serve_strategy


@dataclass
class Run:
    """One tool's run: its rate, its CPU cost per request, and any errors it saw."""

    rate: float
    cpu_us_per_request: float
    trouble: str


async def run_wrk(url: str, connections: int, duration: float) -> Run:
    """wrk's req/s; its CPU per request from the kernel's account of finished children."""
    result = await wrk.run(url, connections, duration)
    return Run(result.rate, result.cpu_s / max(1, result.requests) * 1e6, result.trouble)


async def run_bench(base_url: str, connections: int, requests: int) -> Run:
    """bench.py's keep-alive req/s (a separate process, like wrk), its CPU, its failures."""
    result = await trio.run_process(
        [sys.executable, str(ROOT / "bench.py"), "--url", base_url, "--mode", "keepalive",
         "-c", str(connections), "-n", str(requests), "--json"],
        capture_stdout=True, capture_stderr=True, check=True,
    )  # fmt: skip
    row = json.loads(result.stdout)["results"][0]
    trouble = ", ".join(f"{n} {kind}" for kind, n in row["failures"].items() if n)
    return Run(row["req_per_s"], row["client_cpu_s"] / max(1, row["requests"]) * 1e6, trouble)


async def compare(args: argparse.Namespace) -> list[float]:
    """Run the rounds against one server; print each; return the ratios."""
    ratios = []
    async with serve_strategy(args.strategy) as server:
        inc_url = f"{server.url}/inc?name=i"
        print(f"server: {args.strategy} at {server.url}; {args.connections} connections, "
              f"{args.duration:g} s per wrk run")  # fmt: skip
        await run_wrk(inc_url, args.connections, 1)  # warm-up: neither tool meets a cold server
        for round_number in range(1, args.rounds + 1):
            if round_number % 2:
                theirs = await run_wrk(inc_url, args.connections, args.duration)
                ours = await run_bench(server.url, args.connections, max(args.connections, int(theirs.rate * args.duration)))
            else:  # bench.py first, sized from the last round's wrk rate
                ours = await run_bench(server.url, args.connections, max(args.connections, int(theirs.rate * args.duration)))
                theirs = await run_wrk(inc_url, args.connections, args.duration)
            ratio = ours.rate / theirs.rate
            ratios.append(ratio)
            extra = "".join(f"  [{who}: {run.trouble}]" for who, run in (("wrk", theirs), ("bench.py", ours)) if run.trouble)
            print(
                f"round {round_number}: wrk {theirs.rate:7,.0f} req/s ({theirs.cpu_us_per_request:4.0f} us CPU/req)"
                f"   bench.py {ours.rate:7,.0f} req/s ({ours.cpu_us_per_request:4.0f} us CPU/req)"
                f"   ratio {ratio:.3f}{extra}",
                flush=True,
            )
    return ratios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.vs_wrk",
        description="bench.py's keep-alive client against wrk -t1, on one server (target: ratio >= 0.9).",
        epilog="usage, from the repository root:\n  .venv/bin/python -m benchmarks.vs_wrk [--rounds 1 --duration 1]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--strategy", default="lock", choices=("naive", "lock", "channel", "bare"),
                        help="which server to start (default: %(default)s)")  # fmt: skip
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run (default: %(default)g)")
    parser.add_argument("--rounds", type=int, default=5, help="wrk/bench.py pairs (default: %(default)s)")
    parser.add_argument("-c", "--connections", type=int, default=200, help="connections (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.connections < 1 or not args.duration > 0:
        parser.error("--rounds, --connections and --duration must be positive")
    if not wrk.available():
        print("vs_wrk: wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 1
    ratios: list[float] = []
    try:
        ratios = trio.run(compare, args)
    except* (ServerError, subprocess.CalledProcessError, wrk.WrkError, trio.TooSlowError) as group:
        for exc in leaves(group):
            print(f"vs_wrk: {exc}", file=sys.stderr)
    if not ratios:
        return 1
    median = statistics.median(ratios)
    verdict = "meets" if median >= 0.9 else "misses"
    print(f"median ratio bench.py/wrk: {median:.3f} ({verdict} the 0.9 target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
