"""What correctness costs: lock and channel against the unguarded naive store.

``python benchmarks/correctness_cost.py`` starts the real server for each
strategy (as bench.py does) and, at C=10 and C=200 keep-alive clients, measures
req/s of ``/inc`` for naive, lock and channel, three rounds each, interleaved and
rotated so the machine's drift falls on every strategy alike. It prints each
round's ratios to naive and their medians. naive does the same read, checkpoint
and write as lock with no guard at all, so lock / naive is the price of the lock
alone, and channel / naive the price of the manager round trip.

Targets (issue 6): lock >= 0.95 x naive and channel >= 0.90 x naive, at both
concurrencies. Loopback only; about two minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.client import run_load, set_counter  # noqa: E402
from benchmarks.server import running_server, strategy_server  # noqa: E402

STRATEGIES = ("naive", "lock", "channel")
TARGETS = {"lock": 0.95, "channel": 0.90}


async def rate(strategy: str, *, requests: int, concurrency: int, warmup: int) -> float:
    """Successful req/s of /inc for one strategy on a freshly started server."""
    command, env = strategy_server(strategy)
    async with running_server(command, env=env) as target:
        await run_load(target, requests=warmup, concurrency=concurrency)
        await set_counter(target, "i", 0)
        stats = await run_load(target, requests=requests, concurrency=concurrency)
    if stats.failed:
        raise SystemExit(f"{strategy}: {stats.failed} requests failed: {stats.failures}")
    return stats.succeeded / stats.elapsed()


async def main(args: argparse.Namespace) -> int:
    shortfall = False
    for concurrency in args.concurrency:
        ratios: dict[str, list[float]] = {"lock": [], "channel": []}
        print(f"C={concurrency}, {args.requests} keep-alive requests per run")
        for round_number in range(args.rounds):
            order = STRATEGIES[round_number % 3 :] + STRATEGIES[: round_number % 3]
            rates = {}
            for strategy in order:
                rates[strategy] = await rate(
                    strategy, requests=args.requests, concurrency=concurrency, warmup=args.warmup
                )
            for strategy in ratios:
                ratios[strategy].append(rates[strategy] / rates["naive"])
            print(
                f"  round {round_number + 1}: "
                + "  ".join(f"{s} {rates[s]:7.0f} req/s" for s in STRATEGIES)
                + "  |  "
                + "  ".join(f"{s}/naive {ratios[s][-1]:.2f}" for s in ratios)
            )
        for strategy, values in ratios.items():
            median = statistics.median(values)
            met = median >= TARGETS[strategy]
            shortfall |= not met
            print(
                f"  median {strategy}/naive = {median:.2f} "
                f"(target >= {TARGETS[strategy]:.2f}: {'met' if met else 'NOT met'})"
            )
    return 1 if shortfall else 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("-n", "--requests", type=int, default=3000, help="measured requests per run (default 3000)")
    parser.add_argument("--warmup", type=int, default=500, help="requests before measuring (default 500)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per concurrency (default 3)")
    parser.add_argument(
        "-c", "--concurrency", type=int, nargs="+", default=[10, 200], help="client counts (default 10 200)"
    )
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(trio.run(main, parse_args()))
