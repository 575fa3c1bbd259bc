"""What correctness costs: lock and channel against the unguarded naive store.

``python benchmarks/correctness_cost.py`` starts the real server for each
strategy (as bench.py does), all three side by side, and at C=10 and C=200
keep-alive clients measures req/s of ``/inc`` on each in turn, ``--rounds``
times, rotating the order, so the machine's drift falls on every strategy
alike. It prints each round's ratios to naive and their medians, and each
server's CPU time per request (steadier than req/s on a shared machine). naive does the
same read, checkpoint and write as lock with no guard at all, so lock / naive
is the price of the lock alone, and channel / naive the price of the manager
round trip.

Targets (issue 6): lock >= 0.95 x naive and channel >= 0.90 x naive, at both
concurrencies; it exits 1 if one is missed. Loopback only; about two minutes on
a 2-core machine.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.client import Target, run_load  # noqa: E402
from benchmarks.server import cpu_seconds, running_server, strategy_server, worker_pid  # noqa: E402

STRATEGIES = ("naive", "lock", "channel")
TARGETS = {"lock": 0.95, "channel": 0.90}


async def rate(target: Target, pid: int | None, *, requests: int, concurrency: int) -> tuple[float, float]:
    """Successful req/s of /inc on a running server, and its worker's CPU us per request."""
    before = cpu_seconds(pid) if pid else 0.0
    stats = await run_load(target, requests=requests, concurrency=concurrency)
    used = cpu_seconds(pid) - before if pid else float("nan")
    if stats.failed:
        raise SystemExit(f"{target}: {stats.failed} requests failed: {stats.failures}")
    return stats.succeeded / stats.elapsed(), used * 1e6 / stats.succeeded


async def main(args: argparse.Namespace) -> int:
    shortfall = False
    async with contextlib.AsyncExitStack() as stack:
        targets = {}
        pids = {}
        for strategy in STRATEGIES:
            command, env = strategy_server(strategy)
            targets[strategy] = await stack.enter_async_context(running_server(command, env=env))
            pids[strategy] = worker_pid(targets[strategy])
        for concurrency in args.concurrency:
            for target in targets.values():  # warm up: imports, connections, caches
                await run_load(target, requests=args.warmup, concurrency=concurrency)
            ratios: dict[str, list[float]] = {"lock": [], "channel": []}
            cpu: dict[str, list[float]] = {strategy: [] for strategy in STRATEGIES}
            print(f"C={concurrency}, {args.requests} keep-alive requests per strategy and round")
            for round_number in range(args.rounds):
                shift = round_number % len(STRATEGIES)
                rates = {}
                for strategy in STRATEGIES[shift:] + STRATEGIES[:shift]:
                    rates[strategy], cpu_us = await rate(
                        targets[strategy], pids[strategy], requests=args.requests, concurrency=concurrency
                    )
                    cpu[strategy].append(cpu_us)
                for strategy in ratios:
                    ratios[strategy].append(rates[strategy] / rates["naive"])
                print(
                    f"  round {round_number + 1}: "
                    + "  ".join(f"{s} {rates[s]:7.0f} req/s" for s in STRATEGIES)
                    + "  |  "
                    + "  ".join(f"{s}/naive {ratios[s][-1]:.2f}" for s in ratios)
                )
            print(
                "  server CPU per request, median: "
                + "  ".join(f"{s} {statistics.median(cpu[s]):.0f} us" for s in STRATEGIES)
            )
            for strategy, values in ratios.items():
                median = statistics.median(values)
                met = median >= TARGETS[strategy]
                shortfall |= not met
                capacity = statistics.median(cpu["naive"]) / statistics.median(cpu[strategy])
                print(
                    f"  median {strategy}/naive = {median:.2f} "
                    f"(target >= {TARGETS[strategy]:.2f}: {'met' if met else 'NOT met'}); "
                    f"by CPU per request {capacity:.2f}"
                )
    return 1 if shortfall else 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("-n", "--requests", type=int, default=3000, help="measured requests per run (default 3000)")
    parser.add_argument("--warmup", type=int, default=500, help="requests before measuring (default 500)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per concurrency (default 5)")
    parser.add_argument(
        "-c", "--concurrency", type=int, nargs="+", default=[10, 200], help="client counts (default 10 200)"
    )
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(trio.run(main, parse_args()))
