"""What durability costs each strategy, once the I/O is real.

``.venv/bin/python -m benchmarks.durable`` measures, in one run:

1. the disk: the median latency of ``fsync`` on a small write, in the folder the
   databases go in -- the physical limit of one commit per increment;
2. four real servers side by side, each durable one on a fresh SQLite file
   (``TRIO_COUNTERS_DATABASE``, ``synchronous=FULL``): channel in memory, channel
   durable, lock durable, naive durable. At C=10 and C=200 keep-alive clients it loads
   each in turn, ``--rounds`` times, rotating the order so the machine's drift falls on
   all alike, and prints req/s, increments per commit and commit latency (both from the
   server's own ``/stats``), and its CPU time per request;
3. loading: a file of ``--load`` counters (1,000,000 by default), written directly,
   then a server started on it: how long it takes to serve, and its memory.

Targets, at C=200, on the medians: channel durable >= 0.85 x channel in memory (the
manager's group commit makes durability nearly free), and channel durable >= 1.5 x
lock durable (a lock commits one increment at a time). Each is printed as met or not;
the exit status does not depend on them. It is 1 only if a run fails: a request that
failed, a server that did not start, or a count that is wrong -- lock and channel must
rise by exactly the increments acknowledged, and for every durable server the file must
hold what ``/get`` shows once the load has stopped. Loopback only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time

import trio

from trio_counters.stores.sqlite_file import APPLICATION_ID, SCHEMA, SCHEMA_VERSION
from trio_counters.testing import ServerError, cpu_seconds, rss_kib, serving

from .client import ClientError, Target, fetch, read_counter, run_load
from .strategies import ROOT, leaves, serve_side_by_side

#: In the order of the table: the in-memory reference first.
SERVERS = ("channel", "channel-db", "lock-db", "naive-db")
#: The strategies that must not lose an increment.
EXACT = ("channel", "channel-db", "lock-db")
#: (server, over, at least), judged at TARGET_CONCURRENCY.
TARGETS = (("channel-db", "channel", 0.85), ("channel-db", "lock-db", 1.5))
TARGET_CONCURRENCY = 200


class RunFailed(Exception):
    """A load run had failed requests, or a count is wrong."""


def fsync_latency(folder: str, samples: int = 200) -> list[float]:
    """Seconds each ``fsync`` of a fresh 4 KiB write took, in ``folder``."""
    latencies = []
    with tempfile.NamedTemporaryFile(dir=folder) as file:
        for _ in range(samples):
            os.write(file.fileno(), os.urandom(4096))
            started = time.perf_counter()
            os.fsync(file.fileno())
            latencies.append(time.perf_counter() - started)
    return latencies


async def database_stats(target: Target) -> dict:
    status, body = await fetch(target, "/stats")
    if status != 200:
        raise RunFailed(f"{target.url}/stats answered {status}")
    return json.loads(body).get("database") or {}


async def one_run(server: str, target: Target, pid: int, *, requests: int, concurrency: int) -> dict[str, float]:
    """One load of /inc: req/s, CPU us per request, and what the database did meanwhile."""
    initial = await read_counter(target, "i")
    before, cpu = await database_stats(target), cpu_seconds(pid)
    stats = await run_load(target, requests=requests, concurrency=concurrency)
    used, after = cpu_seconds(pid) - cpu, await database_stats(target)
    if stats.failed:
        raise RunFailed(f"{server}: {stats.failed} requests failed: {stats.failures}")
    increase = await read_counter(target, "i") - initial
    if server in EXACT and increase != stats.succeeded:
        raise RunFailed(f"{server}: {stats.succeeded} increments acknowledged, the counter rose by {increase}")
    result = {"rate": stats.succeeded / stats.elapsed(), "cpu_us": used * 1e6 / stats.succeeded}
    if after:
        commits = after["commits"] - before["commits"]
        result["per_commit"] = (after["writes"] - before["writes"]) / commits
        result["commit_ms"] = (after["commit_seconds"] - before["commit_seconds"]) * 1000 / commits
    return result


async def file_matches(server: str, target: Target) -> None:
    """With no load running, the file holds what /get shows."""
    database = await database_stats(target)
    if not database:
        return
    shown = await read_counter(target, "i")
    with contextlib.closing(sqlite3.connect(f"file:{database['file']}?mode=ro", uri=True)) as connection:
        [(stored,)] = connection.execute("SELECT value FROM counters WHERE name = 'i'").fetchall()
    if stored != shown:
        raise RunFailed(f"{server}: /get shows i = {shown}, the file holds {stored}")
    print(f"  {server}: the file holds i = {stored}, as /get shows")


def _median(runs: list[dict[str, float]], key: str) -> float | None:
    values = [run[key] for run in runs if key in run]
    return statistics.median(values) if values else None


async def throughput(args: argparse.Namespace) -> None:
    async with contextlib.AsyncExitStack() as stack:
        targets, pids = await serve_side_by_side(stack, SERVERS)
        for concurrency in args.concurrency:
            for target in targets.values():  # warm up: imports, connections, caches
                await run_load(target, requests=args.warmup, concurrency=concurrency)
            runs: dict[str, list[dict[str, float]]] = {server: [] for server in SERVERS}
            print(f"\nC={concurrency}, {args.requests} keep-alive /inc requests per server and round")
            for round_number in range(args.rounds):
                shift = round_number % len(SERVERS)
                for server in SERVERS[shift:] + SERVERS[:shift]:
                    runs[server].append(
                        await one_run(
                            server, targets[server], pids[server], requests=args.requests, concurrency=concurrency
                        )
                    )
                print(f"  round {round_number + 1}: " + "  ".join(f"{s} {runs[s][-1]['rate']:5.0f}" for s in SERVERS))
            print(f"  median of {args.rounds}:")
            print(f"    {'server':<11} {'req/s':>6}  {'incs/commit':>11}  {'commit ms':>9}  {'CPU us/req':>10}")
            rates = {}
            for server in SERVERS:
                rates[server] = _median(runs[server], "rate")
                per_commit, commit_ms = _median(runs[server], "per_commit"), _median(runs[server], "commit_ms")
                print(
                    f"    {server:<11} {rates[server]:6.0f}  "
                    f"{'-' if per_commit is None else f'{per_commit:.1f}':>11}  "
                    f"{'-' if commit_ms is None else f'{commit_ms:.3f}':>9}  "
                    f"{_median(runs[server], 'cpu_us'):10.0f}"
                )
            for server, over, least in TARGETS:
                ratio = rates[server] / rates[over]
                verdict = f"target >= {least:.2f}: {'met' if ratio >= least else 'NOT met'}"
                judged = verdict if concurrency == TARGET_CONCURRENCY else "no target at this C"
                print(f"    {server} / {over} = {ratio:.2f} ({judged})")
        print("\nwith the load stopped:")
        for server in SERVERS:
            await file_matches(server, targets[server])


def write_counters(path: str, n: int) -> None:
    """A trio_counters file with ``n`` counters (``i``, ``j`` and ``n - 2`` more), written directly."""
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(SCHEMA)
        connection.execute(f"PRAGMA application_id={APPLICATION_ID}")
        connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        rows = [("i", 0), ("j", 0)] + [(f"counter-{k:07d}", k) for k in range(n - 2)]
        connection.executemany("INSERT INTO counters VALUES (?, ?)", rows)
        connection.commit()


async def loading(n: int) -> None:
    print(f"\nloading {n:,} counters:")
    with tempfile.TemporaryDirectory(prefix="trio_counters-load-") as folder:
        path = os.path.join(folder, "counters.db")
        started = time.perf_counter()
        write_counters(path, n)
        size = os.path.getsize(path)
        print(f"  file written directly in {time.perf_counter() - started:.1f} s ({size / 2**20:.0f} MiB)")
        env = {"TRIO_COUNTERS_DATABASE": path, "TRIO_COUNTERS_STORE": "channel", "TRIO_COUNTERS_MAX_COUNTERS": str(n)}
        started = time.perf_counter()
        async with serving(env=env, cwd=ROOT, startup_timeout=300) as server:
            serving_after = time.perf_counter() - started
            target = Target(server.host, server.port)
            database = await database_stats(target)
            last = f"counter-{n - 3:07d}"
            if database["loaded"] != n or await read_counter(target, last) != n - 3:
                raise RunFailed(f"loading: {database['loaded']} counters loaded of {n}")
            print(
                f"  the server answered {serving_after:.1f} s after it was started; its own load "
                f"(checks, read, first write) took {database['load_seconds']:.1f} s; "
                f"worker RSS {rss_kib(server.worker) / 1024:.0f} MiB"
            )


async def run(args: argparse.Namespace) -> int:
    folder = tempfile.gettempdir()
    latencies = fsync_latency(folder)
    median = statistics.median(latencies)
    p90 = statistics.quantiles(latencies, n=10)[-1]
    print(
        f"disk ({folder}): fsync of a 4 KiB write, median {median * 1000:.3f} ms, p90 {p90 * 1000:.3f} ms "
        f"over {len(latencies)}: one commit per increment can do at most ~{1 / median:,.0f} per second"
    )
    await throughput(args)
    if args.load:
        await loading(args.load)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.durable",
        description=__doc__.split("\n\n")[0],
        epilog="usage, from the repository root:\n  .venv/bin/python -m benchmarks.durable "
        "[-n 500 --warmup 100 --rounds 1 -c 200 --load 0]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-n", "--requests", type=int, default=3000, help="measured requests per run (default 3000)")
    parser.add_argument("--warmup", type=int, default=500, help="requests before measuring (default 500)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per concurrency (default 3)")
    parser.add_argument(
        "-c", "--concurrency", type=int, nargs="+", default=[10, 200], help="client counts (default 10 200)"
    )
    parser.add_argument(
        "--load", type=int, default=1_000_000, help="counters to load at the end; 0 to skip (default 1000000)"
    )
    args = parser.parse_args(argv)
    if args.requests < 1 or args.warmup < 0 or args.rounds < 1 or min(args.concurrency) < 1:
        parser.error("--requests, --rounds and --concurrency must be positive, --warmup not negative")
    if args.load and args.load < 2:
        parser.error("--load must be 0 or at least 2 (i and j)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    status = 1
    try:
        status = trio.run(run, args)
    except* (ServerError, ClientError, RunFailed) as group:
        for error in leaves(group):
            print(f"durable: {error}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
