"""A bounded soak: mixed traffic and misbehaving clients against the real server, then the books.

    .venv/bin/python -m benchmarks.soak [--seconds 60] [--strategy lock] [--warmup 10] [--keep-alive 5]

Starts ``hypercorn --worker-class trio --backlog 1024 trio_counters:app`` through
:mod:`trio_counters.testing` (on a free 127.0.0.1 port, in its own session,
stopped with SIGTERM at the end) and, for ``--seconds``, runs at once:

* well-behaved clients, keep-alive and close mode (``Connection: close`` and
  HTTP/1.0): ``/inc`` on shared counters, ``/set``, ``/get`` and ``/inc`` on
  counters each client owns (every answer checked against the client's model),
  form POSTs, and requests that must be refused (404, 400);
* misbehaving clients: idle connections, half-sent requests, a slowloris,
  unfinished POST bodies, garbage bytes, oversized requests (414, 413, 431),
  unknown paths, and clients that disconnect at every stage of an ``/inc``.

The clients and their books are in :mod:`benchmarks.soak_clients` and
:mod:`benchmarks.soak_misbehaving`. At the end it reads every counter back:

* shared counters (only well-behaved clients): final == acknowledged, exactly;
* disrupted counters (also hit by the disconnecting clients):
  acknowledged <= final <= acknowledged + might have counted;
* owned counters: final == the owner's model.

It prints requests, refusals by status, misbehaving outcomes, unexpected errors,
the counts, and the worker's RSS (``/proc/PID/status`` VmRSS of hypercorn's worker
process, not its parent) at start, after the warm-up and at the end, with the
growth after warm-up. Exit status 1 if anything is off: an unexpected error, a
count out of bounds, RSS growth of 10 % or more after warm-up, a traceback in
the server's log, a server that did not
start or did not exit 0; 130 on Ctrl-C.

Loopback only; nothing here listens or connects anywhere else.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import time

import trio

from trio_counters.testing import cpu_seconds, request, rss_kib, serving, value_of

from .soak_clients import BODY_TIMEOUT, DISRUPTED, REQUEST_TIMEOUT, SHARED, SLACK, Books, WellBehaved, loop
from .soak_misbehaving import Misbehaving
from .strategies import ROOT, run_script

#: RSS growth after warm-up that fails the run, in percent.
MAX_RSS_GROWTH = 10.0


@dataclasses.dataclass
class Measured:
    """Everything the run saw, for the verdict."""

    books: Books
    elapsed: float
    cpu: tuple[float, float]  # the server's worker, this process
    worker: int
    rss: dict[str, int]
    samples: list[tuple[float, int]]
    finals: dict[str, int | None]
    stats: tuple[int, str]  # /stats: status, body
    exit_code: int | None
    tracebacks: list[str]


async def read_back(port: int, names: list[str]) -> dict[str, int | None]:
    """Every counter's final value (None if it does not exist)."""
    values: dict[str, int | None] = {}
    for name in names:
        with trio.fail_after(REQUEST_TIMEOUT):
            values[name] = await value_of(port, name)
    return values


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


async def run(args: argparse.Namespace) -> Measured:
    """Start the server, run the traffic for ``--seconds``, read the counters back, stop it."""
    books = Books()
    rng = random.Random(args.seed)
    env = {"TRIO_COUNTERS_STORE": args.strategy}
    server_args = ("--keep-alive", f"{args.keep_alive:g}")
    async with serving(env=env, args=server_args, cwd=ROOT, stop_timeout=15) as server:
        worker = server.worker
        rss = {"start": rss_kib(worker)}
        samples: list[tuple[float, int]] = []
        for name in SHARED + DISRUPTED:
            reply = await request(server.port, f"/set?name={name}&val=0")
            assert reply.status == 200, reply
        stopping = trio.Event()
        start = trio.current_time()
        cpu_start = (cpu_seconds(worker), time.process_time())

        async def sample_rss() -> None:
            while True:
                samples.append((trio.current_time() - start, rss_kib(worker)))
                await trio.sleep(1)

        async def progress() -> None:
            while True:
                await trio.sleep(10)
                print(f"  {trio.current_time() - start:5.0f} s: {books.requests} requests, "
                      f"{sum(books.misbehaving.values())} misbehaving connections, "
                      f"{sum(books.unexpected.values())} unexpected, RSS {_mib(rss_kib(worker))}",
                      flush=True)  # fmt: skip

        with trio.fail_after(args.seconds + BODY_TIMEOUT + 3 * SLACK + 30):
            async with trio.open_nursery() as background:
                background.start_soon(sample_rss)
                background.start_soon(progress)
                # Clients whose books must balance stop between requests...
                async with trio.open_nursery() as balanced:
                    for ident in range(args.clients):
                        close_mode = ident % 4 == 3
                        client = WellBehaved(server.port, books, ident, random.Random(rng.random()), close_mode)
                        balanced.start_soon(client.run, stopping)
                    bad = Misbehaving(server.port, books, args.keep_alive, random.Random(rng.random()))
                    for _ in range(4):
                        balanced.start_soon(loop, bad.disconnect, stopping, books, "disconnect")
                    # ...the others are just cancelled.
                    async with trio.open_nursery() as unbalanced:
                        for action, copies in (
                            (bad.idle, 30), (bad.half_request, 6), (bad.slowloris, 2),
                            (bad.unfinished_body, 2), (bad.garbage, 2), (bad.oversized, 2),
                        ):  # fmt: skip
                            for _ in range(copies):
                                unbalanced.start_soon(loop, action, stopping, books, action.__name__)
                        await trio.sleep(args.warmup)
                        rss["after warm-up"] = rss_kib(worker)
                        await trio.sleep(max(0.0, args.seconds - args.warmup))
                        stopping.set()
                        unbalanced.cancel_scope.cancel()
                elapsed = trio.current_time() - start
                rss["end"] = rss_kib(worker)
                cpu = (cpu_seconds(worker) - cpu_start[0], time.process_time() - cpu_start[1])
                background.cancel_scope.cancel()
            finals = await read_back(server.port, SHARED + DISRUPTED + sorted(books.models))
            stats = await request(server.port, "/stats")
    # The server has stopped: its exit code and its whole log are in.
    return Measured(
        books, elapsed, cpu, worker, rss, samples, finals, (stats.status, stats.body),
        server.process.returncode, server.tracebacks(),
    )  # fmt: skip


def check_traffic(m: Measured) -> list[str]:
    """Print what the clients did; the unexpected errors as problems."""
    books, elapsed, cpu = m.books, m.elapsed, m.cpu
    print(f"\nrequests (well-behaved): {books.requests} in {elapsed:.1f} s, {books.requests / elapsed:.0f}/s "
          f"({books.close_mode} on connections of their own)")  # fmt: skip
    print(f"CPU: server worker {cpu[0]:.1f} s ({cpu[0] / elapsed * 100:.0f} % of one core), "
          f"this client {cpu[1]:.1f} s ({cpu[1] / elapsed * 100:.0f} %)")  # fmt: skip
    print("refusals by status: " + (", ".join(f"{s}: {n}" for s, n in sorted(books.statuses.items())) or "none"))
    print("misbehaving connections, each handled as it must be:")
    for kind, count in sorted(books.misbehaving.items()):
        timing = books.timings.get(kind)
        extra = f"  (closed after {min(timing):.2f}-{max(timing):.2f} s)" if timing else ""
        print(f"  {kind}: {count}{extra}")
    print(f"unexpected errors: {sum(books.unexpected.values())}")
    problems = []
    for kind, count in sorted(books.unexpected.items()):
        print(f"  {kind}: {count}, e.g. " + "; ".join(books.examples[kind]))
        problems.append(f"{count} x {kind}")
    return problems


def check_counts(m: Measured) -> list[str]:
    """Print the read-back against the books; every count out of bounds as a problem."""
    books, finals = m.books, m.finals
    problems = []
    exact = sum(1 for name in SHARED if finals[name] == books.acknowledged[name])
    print(f"shared counters (acknowledged increments only): {exact}/{len(SHARED)} exact, "
          f"{sum(books.acknowledged[name] for name in SHARED)} increments")  # fmt: skip
    for name in SHARED:
        if finals[name] != books.acknowledged[name]:
            pending = books.might_have_counted[name]
            problems.append(f"{name}: final {finals[name]}, acknowledged {books.acknowledged[name]} (+{pending} unanswered)")
    low = sum(books.acknowledged[name] for name in DISRUPTED)
    high = low + sum(books.might_have_counted[name] for name in DISRUPTED)
    total = sum(finals[name] or 0 for name in DISRUPTED)
    inside = all(
        books.acknowledged[name] <= (finals[name] or 0) <= books.acknowledged[name] + books.might_have_counted[name]
        for name in DISRUPTED
    )
    print(f"disrupted counters: final {total} within [acknowledged {low}, + might have counted = {high}]: "
          f"{'yes' if inside else 'NO'} for every one of {len(DISRUPTED)}")  # fmt: skip
    if not inside:
        for name in DISRUPTED:
            problems.append(
                f"{name}: final {finals[name]}, acknowledged {books.acknowledged[name]}, "
                f"might have counted {books.might_have_counted[name]}"
            )
    wrong_owned = [name for name, model in books.models.items() if finals[name] != model]
    print(f"owned counters (set/inc/get by one client): {len(books.models) - len(wrong_owned)}/{len(books.models)} "
          f"equal the client's model")  # fmt: skip
    problems += [f"{name}: final {finals[name]}, model {books.models[name]}" for name in wrong_owned]
    return problems


def check_server(m: Measured) -> list[str]:
    """Print the worker's memory and the server's exit; growth, a bad exit and tracebacks as problems."""
    problems = []
    status, body = m.stats
    if status == 200:
        try:
            print(f"/stats: {json.loads(body).get('counters')} counters")
        except (ValueError, AttributeError):
            pass
    rss = m.rss
    growth = (rss["end"] - rss["after warm-up"]) / rss["after warm-up"] * 100
    peak = max(kib for _, kib in m.samples) if m.samples else rss["end"]
    print(f"worker RSS (pid {m.worker}): start {_mib(rss['start'])}, after warm-up "
          f"{_mib(rss['after warm-up'])}, end {_mib(rss['end'])}, peak {_mib(peak)}; "
          f"growth after warm-up {growth:+.1f} %")  # fmt: skip
    if growth >= MAX_RSS_GROWTH:
        problems.append(f"RSS grew {growth:.1f} % after warm-up (limit {MAX_RSS_GROWTH:g} %)")
    print(f"server: exit code {m.exit_code}, {len(m.tracebacks)} tracebacks in its log")
    if m.exit_code != 0:
        problems.append(f"the server exited with {m.exit_code}")
    for record in m.tracebacks[:3]:
        problems.append("traceback in the server log:\n" + record[-3000:])
    if len(m.tracebacks) > 3:
        problems.append(f"... and {len(m.tracebacks) - 3} more tracebacks")
    return problems


def verdict(m: Measured) -> int:
    """The report; 1 if anything is off, else 0."""
    problems = check_traffic(m) + check_counts(m) + check_server(m)
    if problems:
        print("\nFAILED:")
        for problem in problems[:40]:
            print(f"  - {problem}")
        return 1
    print("\nclean: no unexpected errors, exact counts, RSS bounded")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak",
        description=__doc__.split("\n\n")[0],
        epilog="usage, from the repository root:\n  .venv/bin/python -m benchmarks.soak [--seconds 15]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the traffic runs (default 60)")
    parser.add_argument("--strategy", default="lock", help="the store: lock (default), channel, naive, ...")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before the warm RSS sample (default 10)")
    parser.add_argument("--keep-alive", type=float, default=5.0, help="hypercorn --keep-alive (default 5, its own)")
    parser.add_argument("--clients", type=int, default=24, help="well-behaved clients; every 4th in close mode")
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args(argv)
    if args.warmup >= args.seconds:
        parser.error("--warmup must be shorter than --seconds")
    if args.strategy == "naive":
        print("note: naive loses updates on purpose; expect its shared counters to come out low", flush=True)
    print(f"soak: strategy {args.strategy}, {args.seconds:g} s (warm-up {args.warmup:g} s), "
          f"hypercorn --keep-alive {args.keep_alive:g}, transport "
          f"{os.environ.get('TRIO_COUNTERS_TRANSPORT', '(default)')}", flush=True)  # fmt: skip
    return run_script("soak", judged_run, args)


async def judged_run(args: argparse.Namespace) -> int:
    """The run, then its verdict as the exit status."""
    return verdict(await run(args))


if __name__ == "__main__":
    sys.exit(main())
