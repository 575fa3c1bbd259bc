"""bench.py: every counter strategy under the same load, in one table.

Run ``python bench.py`` from the repository root after ``pip install -e .``; see
``python bench.py --help``. The parts live in ``benchmarks/``: the load client
(client.py), the statistics and output (stats.py) and what each strategy name
serves (strategies.py); servers are started by the harness the tests use,
:mod:`trio_counters.testing`. This file is the command: arguments, the order of
the runs, progress, Ctrl-C, and the picture.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO

import trio

#: The TRIO_COUNTERS_* settings configure the servers bench.py starts, not bench.py.
#: Run as a script, it sets them aside before importing the harness (importing
#: trio_counters builds an app from them), so that a bad one is the server's
#: failure, reported with the server's log, and hands them to each server.
SERVER_SETTINGS: dict[str, str] = {}
if __name__ == "__main__":
    SERVER_SETTINGS = {key: os.environ.pop(key) for key in list(os.environ) if key.startswith("TRIO_COUNTERS_")}

from benchmarks.client import MODES, ClientError, LoadStats, Target, read_counter, run_load, set_counter  # noqa: E402
from benchmarks.stats import JSON_VERSION, Row, format_table, summarise, to_json  # noqa: E402
from benchmarks.strategies import leaves, serve_strategy  # noqa: E402
from trio_counters.testing import ServerError  # noqa: E402

STRATEGIES = ("naive", "lock", "channel")
#: The ceiling row's name in --strategies: the bare ASGI app, unguarded, a reference.
CEILING = "bare"
DEFAULT_STRATEGIES = (*STRATEGIES, CEILING)
#: The same bare app guarded like lock, asked for by name: lock's row over it is what
#: the framework costs for the same work.
GUARDED_CEILING = "bare-lock"
REFERENCES = (CEILING, GUARDED_CEILING)
#: Rows past one process, asked for by name (they need a Redis, so not run by
#: default): redis with one worker and with two (-w 2), and lock with two workers,
#: which gives each worker a table of its own -- the split count redis fixes.
SCALE_OUT = ("redis", "redis-w2", "lock-w2")
#: Rows whose workers each keep their own table: their "lost" is the other's share.
SPLIT = ("lock-w2",)
#: Durable rows, asked for by name: each in-process strategy keeping its counts in
#: an SQLite file (TRIO_COUNTERS_DATABASE), a fresh temporary one per server.
DURABLE = tuple(f"{strategy}-db" for strategy in STRATEGIES)
CHOICES = (*DEFAULT_STRATEGIES, GUARDED_CEILING, *DURABLE, *SCALE_OUT)
DEFAULT_REQUESTS = 5000
DEFAULT_CONCURRENCY = 200
DEFAULT_MODE = "keepalive"
DEFAULT_TIMEOUT = 10.0
EXIT_INTERRUPTED = 130

DESCRIPTION = """\
Show the race, and what each fix costs. For each strategy, start the real server
(hypercorn --worker-class trio, on a free loopback port), set the counter to 0,
send N increments from C concurrent clients, read the final count, stop the
server, and print one table: requests, failed, final count, lost updates
(succeeded - increase), req/s, req/s over naive's (what each guard costs, when
naive ran) and latency p50/p99/max. naive is meant to lose
updates; lock and channel must lose none. The bare* row is the reference ceiling:
the same workload on a bare ASGI app (no Quart) on the same transport, unguarded
(in trio a read and a write with no await between them need no lock). bare-lock,
asked for by name, is that app guarded step for step like 'lock': lock's rate
over bare-lock's is what the framework costs for the same work.

More workers, asked for by name: redis and redis-w2 (one and two hypercorn
workers on one Redis, at TRIO_COUNTERS_REDIS_URL, default
redis://127.0.0.1:6379/0, which must be running), and lock-w2: two workers with
a table each, so every /get sees one worker's share -- a failure, on purpose.

Durable rows, asked for by name: naive-db, lock-db and channel-db keep their
counts in an SQLite file (the database setting), each server on a fresh
temporary file, every acknowledged increment committed first (docs/durable.md).

With --url, load a server you started yourself instead, reading the count
before and after; it is not reset, so nothing else should touch the counter.
A progress bar shows on stderr when it is a terminal; piped, bench.py is quiet."""

EPILOG = f"""\
connection modes (--mode):
  keepalive  each client keeps one connection open for all its requests, like
             wrk or ab -k. The default: it measures how the server handles
             requests, not the TCP setup and teardown, which cost the same for
             every strategy and would blur the differences between them; it is
             also the mode python -m benchmarks.vs_wrk holds against wrk.
  close      a new connection per request, sent with 'Connection: close', and
             the server must close it, like the seed's ab run (HTTP/1.0). A
             server that answers but never closes is counted as 'unclosed'.

a request fails on: connect (refused/reset), io (broken connection or invalid
HTTP), timeout (no complete answer within --timeout), unclosed (close mode: no
close after the answer; the server did apply it), status (not 2xx). Nothing is
retried.

--json prints one JSON document to stdout instead of the table:
  version        {JSON_VERSION}, bumped if a field changes meaning
  config         mode, requests, concurrency, timeout_s, name, url (null
                 unless --url), strategies
  results[]      one object per server, in table order:
    strategy     naive | lock | channel | bare | bare-lock | naive-db | lock-db | channel-db |
                 redis | redis-w2 | lock-w2 | the --url
    reference    true for the bare ASGI rows (bare, bare-lock)
    planned      requests asked for (-n); requests = succeeded + failed
                 (fewer than planned only if interrupted)
    succeeded, failed, failures {{connect, io, timeout, unclosed, status}}
    initial, final   the counter before and after (null if unreadable)
    lost         succeeded - (final - initial); null if unknown; below 0
                 if failed requests were applied anyway (timeout, unclosed)
    elapsed_s, req_per_s   wall time of the load; successes per second
    latency_ms   {{p50, p99, max}} over successful requests, nearest-rank;
                 request sent to answer complete (plus the connect, in close
                 mode and for a keep-alive connection's first request)
    client_cpu_s CPU seconds bench.py itself used during the load; near
                 elapsed_s, the client was the limit (the table then warns)
    interrupted  true if Ctrl-C cut this run short
    error        why the final count is missing, else null

examples:
  .venv/bin/python bench.py
  .venv/bin/python bench.py -n 20000 --strategies lock,channel --mode close
  .venv/bin/python bench.py --strategies naive,lock,channel,naive-db,lock-db,channel-db
  .venv/bin/python bench.py --strategies redis,redis-w2,lock-w2     (Redis running)
  .venv/bin/python bench.py --url http://127.0.0.1:8000 -n 10000 -c 200 --name i
  .venv/bin/python bench.py --json > results.json
  .venv/bin/python bench.py --plot bench.png     (needs: pip install -e '.[plot]')

exit status: 0 done, 1 a server or the --url could not be used or every request
to one server failed, 2 bad arguments, {EXIT_INTERRUPTED} interrupted by Ctrl-C (the
table shows what was measured)."""


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be above 0 seconds, got {text}")
    return value


def _strategies(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in CHOICES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown {', '.join(map(repr, unknown)) or 'empty list'}: choose from {','.join(CHOICES)}"
        )
    return tuple(dict.fromkeys(names))  # keep order, drop repeats


def build_parser() -> argparse.ArgumentParser:
    """The command line; its --help is the user's manual."""
    parser = argparse.ArgumentParser(
        prog="bench.py",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = parser.add_argument_group("what to load")
    what.add_argument(
        "--strategies", type=_strategies, default=None, metavar="LIST",
        help=f"comma-separated, from {','.join(CHOICES)} (default: "
        f"{','.join(DEFAULT_STRATEGIES)}; '{CEILING}' is the reference ceiling)",
    )
    what.add_argument(
        "--url", metavar="URL",
        help="load this running server instead (loopback only), e.g. http://127.0.0.1:8000",
    )
    what.add_argument("--name", default="i", help="the counter to increment (default: %(default)s)")
    load = parser.add_argument_group("the load")
    load.add_argument(
        "-n", "--requests", type=_positive, default=DEFAULT_REQUESTS, metavar="N",
        help="increments per server (default: %(default)s)",
    )
    load.add_argument(
        "-c", "--concurrency", type=_positive, default=DEFAULT_CONCURRENCY, metavar="C",
        help="concurrent clients, each with its own connection (default: %(default)s)",
    )
    load.add_argument(
        "--mode", choices=MODES, default=DEFAULT_MODE,
        help="keepalive (like wrk) or close (like ab); see below (default: %(default)s)",
    )
    load.add_argument(
        "--timeout", type=_seconds, default=DEFAULT_TIMEOUT, metavar="SECONDS",
        help="per-request timeout; a slower request counts as failed (default: %(default)g)",
    )
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print JSON (fields below) instead of the table")
    out.add_argument("--plot", metavar="FILE.png", help="also draw req/s and lost updates per strategy")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and cross-check the arguments; argparse's usage message on any error."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.url is not None:
        if args.strategies is not None:
            parser.error("--url loads the server you started: leave out --strategies")
        try:
            args.target = Target.from_url(args.url)
        except ClientError as exc:
            parser.error(str(exc))
    if args.strategies is None:
        args.strategies = DEFAULT_STRATEGIES
    if not args.name:
        parser.error("--name must not be empty")
    return args


@dataclass
class Session:
    """One bench.py run: the rows so far, and whether Ctrl-C stopped it."""

    args: argparse.Namespace
    progress: TextIO | None = None
    rows: list[Row] = field(default_factory=list)
    interrupted: bool = False


async def show_progress(out: TextIO, label: str, stats: LoadStats, total: int) -> None:
    """Redraw a one-line bar ten times a second until cancelled, then erase it."""
    try:
        while True:
            done = stats.done
            filled = 30 * done // total if total else 30
            elapsed = stats.elapsed()
            rate = stats.succeeded / elapsed if elapsed > 0 else 0.0
            out.write(
                f"\r{label:<10.10} [{'#' * filled}{'.' * (30 - filled)}] {done:>7,}/{total:,}"
                f"  {rate:8,.0f} req/s  {stats.failed:,} failed"
            )
            out.flush()
            await trio.sleep(0.1)
    finally:
        out.write("\r\x1b[K")
        out.flush()


async def measure(session: Session, target: Target, label: str, *, reset: bool, reference: bool) -> None:
    """Run the workload against one server and append its row, even if interrupted."""
    args = session.args
    if reset:
        await set_counter(target, args.name, 0)
    initial = await read_counter(target, args.name)
    stats = LoadStats()
    try:
        async with trio.open_nursery() as nursery:
            if session.progress is not None:
                nursery.start_soon(show_progress, session.progress, label, stats, args.requests)
            await run_load(
                target, requests=args.requests, concurrency=args.concurrency,
                mode=args.mode, timeout=args.timeout, stats=stats, name=args.name,
            )  # fmt: skip
            nursery.cancel_scope.cancel()
    finally:  # on Ctrl-C too: read the count and keep what was measured
        final, error = None, None
        with trio.CancelScope(shield=True):
            try:
                final = await read_counter(target, args.name, timeout=5.0)
            except ClientError as exc:
                error = f"final count unknown: {exc}"
        session.rows.append(
            summarise(
                label, stats, planned=args.requests, initial=initial, final=final,
                reference=reference, interrupted=session.interrupted, error=error,
            )  # fmt: skip
        )


async def run_session(session: Session) -> None:
    """Every server of the run, one after another, each started and stopped here."""
    args = session.args
    if args.url is not None:
        await measure(session, args.target, args.target.url, reset=False, reference=False)
        return
    for strategy in args.strategies:
        async with serve_strategy(strategy, settings=SERVER_SETTINGS) as server:
            target = Target(server.host, server.port)
            await measure(session, target, strategy, reset=True, reference=strategy in REFERENCES)


async def run_until_interrupted(session: Session) -> None:
    """Run the session; the first Ctrl-C cancels it, which stops any server cleanly."""

    async def on_sigint(signals: object, scope: trio.CancelScope) -> None:
        async for _ in signals:  # type: ignore[attr-defined]
            if not session.interrupted:
                session.interrupted = True
                print("\nbench.py: interrupted; stopping", file=sys.stderr, flush=True)
            scope.cancel()

    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as scope:
                nursery.start_soon(on_sigint, signals, scope)
                await run_session(session)
            nursery.cancel_scope.cancel()


def plot(rows: Sequence[Row], path: str) -> None:
    """Two bar charts side by side: successful req/s, and lost updates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [row.strategy + ("*" if row.reference else "") for row in rows]
    colours = ["#999999" if row.reference else "#4477aa" for row in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    rates = left.bar(labels, [row.req_per_s or 0 for row in rows], color=colours)
    left.bar_label(rates, fmt="%.0f")
    left.set_title("throughput (successful req/s)")
    lost = right.bar(labels, [row.lost or 0 for row in rows], color=["#cc3311" if row.lost else "#228833" for row in rows])
    right.bar_label(lost, fmt="%d")  # a 0 is the point for lock and channel: show it
    right.set_title("lost updates (succeeded - increase)")
    for axis in (left, right):
        axis.tick_params(axis="x", labelrotation=20)
        axis.margins(y=0.12)  # room for the bar labels
    fig.suptitle("bench.py" + ("   (* = bare ASGI reference ceiling)" if any(r.reference for r in rows) else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def config_of(args: argparse.Namespace) -> dict[str, object]:
    """The run's settings, as the JSON document's ``config``."""
    return {
        "mode": args.mode,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "timeout_s": args.timeout,
        "name": args.name,
        "url": args.target.url if args.url is not None else None,
        "strategies": None if args.url is not None else list(args.strategies),
    }


def report(session: Session, out: TextIO) -> None:
    """The table (or JSON) of whatever was measured."""
    args = session.args
    if args.json:
        json.dump(to_json(session.rows, config_of(args)), out, indent=2)
        out.write("\n")
        return
    mode = "keep-alive connections" if args.mode == "keepalive" else "a new connection per request"
    note = (
        f"{args.requests:,} increments of {args.name!r} per server from "
        f"{min(args.concurrency, args.requests)} clients, {mode}, {args.timeout:g} s timeout"
    )
    out.write(format_table(session.rows, note=note) + "\n")
    for row in session.rows:
        if row.strategy in SPLIT:
            out.write(
                f"{row.strategy}: FAILS by design -- two workers, two tables; each /get reads one"
                " worker's share, so 'lost' is what the other worker counted\n"
            )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, run, report; return the exit status."""
    args = parse_args(argv)
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        print("bench.py: --plot needs matplotlib, which is not installed: pip install -e '.[plot]'", file=sys.stderr)
        return 2
    session = Session(args, progress=sys.stderr if sys.stderr.isatty() else None)
    status = 0
    try:
        trio.run(run_until_interrupted, session)
    except* (ClientError, ServerError) as group:  # nurseries wrap errors in groups
        for exc in leaves(group):
            print(f"bench.py: {exc}", file=sys.stderr)
        status = 1
    for row in session.rows:
        if row.requests and not row.succeeded and not session.interrupted:
            print(f"bench.py: every request to {row.strategy} failed", file=sys.stderr)
            status = 1
    if session.rows:
        try:
            report(session, sys.stdout)
            sys.stdout.flush()
        except BrokenPipeError:  # e.g. piped into head: not worth a traceback
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
        if args.plot:
            plot(session.rows, args.plot)
            print(f"bench.py: plot written to {args.plot}", file=sys.stderr)
    return EXIT_INTERRUPTED if session.interrupted else status


if __name__ == "__main__":
    sys.exit(main())
