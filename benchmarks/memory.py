"""What a counter costs in memory: the server's RSS with 100k and with 1M counters.

    .venv/bin/python -m benchmarks.memory [--strategy lock] [--counts 100000,1000000] [--in-process]

Default: the real server. Starts ``hypercorn --worker-class trio trio_counters:app``
through :mod:`trio_counters.testing` (``TRIO_COUNTERS_STORE=--strategy``, the default ``max_counters`` of 1,000,000),
warms the request path up with requests that create nothing, reads the worker's
RSS (``/proc/PID/status`` VmRSS of hypercorn's worker process, where the table
lives, not its parent), then creates counters with ``/set`` -- pipelined, 100
requests per write, over a few keep-alive connections -- up to each total in
``--counts`` (``i`` and ``j`` count: they exist from the start) and reads RSS at
each. Bytes per counter = RSS growth / counters created. At 1,000,000 it also
checks the limit: one more new name gets 507, an existing one still takes a set.

``--in-process``: no server. Builds the same store the app builds
(``trio_counters.stores.make_store`` with the app's settings and initial
counters) in this process and fills it through the store's own ``set``, with the
names and values the server run sends. It measures the same thing -- the table
is the only per-counter state in the worker for ``lock`` and ``channel`` (a
``dict[str, int]`` in ``CounterTable``), and the key and value objects are the
same kind of ``str`` and ``int`` as the ones werkzeug and the app parse from the
query -- in seconds instead of minutes; run both at 100k to see them agree.

Names are ``c0000000``-style (8 ASCII characters), values distinct integers
above 2**30, so every value is an int object of its own (CPython shares -5..256).
RSS moves in steps as the dict doubles and the allocator takes new arenas, so a
figure is the cost at that size, not a per-counter constant.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time

import trio

from trio_counters.testing import Raw, get_bytes, request, rss_kib, serving

from .soak_clients import KeepAliveClient
from .strategies import ROOT, run_script

INITIAL = 2  # i and j
PIPELINE = 100
#: hypercorn closes a keep-alive connection after this many requests.
PER_CONNECTION = 1000
VALUE_BASE = 2**30 + 1


def name_of(k: int) -> str:
    return f"c{k:07d}"


async def fill(port: int, start: int, stop: int, connections: int) -> None:
    """Create counters ``start`` .. ``stop - 1`` with pipelined ``/set``s; each must get 200."""
    todo = iter(range(start, stop, PIPELINE))
    done = start
    last_print = time.monotonic()

    async def worker() -> None:
        nonlocal done, last_print
        raw: Raw | None = None
        sent_on_stream = 0
        try:
            for first in todo:
                batch = range(first, min(first + PIPELINE, stop))
                if raw is None or sent_on_stream + len(batch) > PER_CONNECTION:
                    if raw is not None:
                        await raw.aclose()
                    raw = await Raw.connect(port)
                    sent_on_stream = 0
                await raw.send(
                    b"".join(
                        b"GET /set?name=%s&val=%d HTTP/1.1\r\nHost: x\r\n\r\n" % (name_of(k).encode(), VALUE_BASE + k)
                        for k in batch
                    )
                )
                sent_on_stream += len(batch)
                for k in batch:
                    response = await raw.response()
                    if response.status != 200:
                        raise RuntimeError(f"/set?name={name_of(k)} answered {response.status} {response.body!r}")
                done += len(batch)
                if time.monotonic() - last_print > 10:
                    last_print = time.monotonic()
                    print(f"    {done + INITIAL:,} counters", flush=True)
        finally:
            if raw is not None:
                await raw.aclose()

    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(worker)


def per_counter(base_kib: int, now_kib: int, created: int) -> str:
    growth = (now_kib - base_kib) * 1024
    return f"RSS {now_kib / 1024:.1f} MiB (+{growth / 2**20:.1f} MiB): {growth / created:.0f} bytes per counter"


async def measure_server(args: argparse.Namespace) -> int:
    status = 0
    async with serving(env={"TRIO_COUNTERS_STORE": args.strategy}, cwd=ROOT) as server:
        worker = server.worker
        start = rss_kib(worker)
        # Warm the request path up without creating anything: sets of an existing counter.
        client = KeepAliveClient(server.port)
        for _ in range(3000):
            response = await client.request(get_bytes("/set?name=i&val=1"))
            assert response.status == 200, response
        await client.aclose()
        base = rss_kib(worker)
        print(f"{args.strategy}, real server (worker pid {worker}): RSS at start {start / 1024:.1f} MiB, "
              f"after 3000 requests that create nothing {base / 1024:.1f} MiB", flush=True)  # fmt: skip
        created = 0
        for total in args.counts:
            began = time.monotonic()
            await fill(server.port, created, total - INITIAL, args.connections)
            created = total - INITIAL
            took = time.monotonic() - began
            now = rss_kib(worker)
            print(f"  {total:,} counters: {per_counter(base, now, created)}  (filled in {took:.0f} s)", flush=True)
        stats = await request(server.port, "/stats")
        if stats.status == 200:
            print(f"  /stats: {json.loads(stats.body).get('counters')} counters")
        if args.counts[-1] >= 1_000_000:
            new = await request(server.port, "/set?name=one-too-many&val=1")
            existing = await request(server.port, f"/set?name={name_of(0)}&val=2")
            print(f"  past the limit: a new name gets {new.status} ({new.body.strip()}), "
                  f"an existing one {existing.status}")  # fmt: skip
            if new.status != 507 or existing.status != 200:
                status = 1
    exit_code = server.process.returncode
    print(f"  server exit code {exit_code}")
    return status or (exit_code != 0)


async def measure_in_process(args: argparse.Namespace) -> int:
    from trio_counters import Settings
    from trio_counters.config import INITIAL_COUNTERS
    from trio_counters.stores import make_store

    settings = Settings.resolve(store=args.strategy)
    store = make_store(
        settings.store,
        max_counters=settings.max_counters,
        initial=INITIAL_COUNTERS,
        channel_buffer=settings.channel_buffer,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(store.serve)
        gc.collect()
        base = rss_kib(os.getpid())
        print(f"{args.strategy}, in process: RSS with the empty store {base / 1024:.1f} MiB", flush=True)
        created = 0
        for total in args.counts:
            for k in range(created, total - INITIAL):
                # As the app does: a str parsed from the query, an int from int().
                await store.set(str(name_of(k)), int(str(VALUE_BASE + k)))
            created = total - INITIAL
            print(f"  {total:,} counters: {per_counter(base, rss_kib(os.getpid()), created)}", flush=True)
        store.close()
        nursery.cancel_scope.cancel()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.memory",
        description=__doc__.split("\n\n")[0],
        epilog="usage, from the repository root:\n  .venv/bin/python -m benchmarks.memory [--counts 10000]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--strategy", default="lock", help="the store (default lock)")
    parser.add_argument("--counts", default="100000,1000000", help="totals to measure at, ascending (default 100000,1000000)")
    parser.add_argument("--connections", type=int, default=4, help="keep-alive connections filling the table")
    parser.add_argument("--in-process", action="store_true", help="fill the store in this process, no server")
    args = parser.parse_args(argv)
    args.counts = sorted(int(count.replace("_", "")) for count in args.counts.split(","))
    if args.counts[0] <= INITIAL:
        parser.error(f"counts must be above {INITIAL} (i and j exist from the start)")
    return run_script("memory", measure_in_process if args.in_process else measure_server, args)

if __name__ == "__main__":
    sys.exit(main())
