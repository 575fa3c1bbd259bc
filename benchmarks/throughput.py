"""What the trio transport costs: hypercorn's stock trio TCPServer against ours.

Run from the repository root, after ``pip install -e .``::

    .venv/bin/python -m benchmarks.throughput
    .venv/bin/python -m benchmarks.throughput --runs 1 --duration 2

It starts seven real ``hypercorn --worker-class trio`` servers through
:mod:`trio_counters.testing` (free loopback ports, each one's port read from its
"Running on" line) and loads each with ``wrk -t1`` over keep-alive connections,
``GET /inc?name=j``, at each concurrency (10 and 200), round-robin, ``--runs``
times:

=============  =====================================================  =========
row            app                                                     transport
=============  =====================================================  =========
plain          benchmarks.plain_quart: QuartTrio, dict update,         stock
               ``return "ok"`` (what a user writes by hand)
ours/stock     trio_counters:app, default (lock) store                 stock
ours/fast      trio_counters:app, default (lock) store                 fast
bare/stock     benchmarks.bare_asgi ``unguarded_app``: no framework;   stock
               read and write with no await between (atomic in trio):
               the transport's ceiling
bare/fast      the same                                                fast
bare+lock/...  benchmarks.bare_asgi ``app``: bench.py's bare-lock,     both
               lock-guarded like the lock strategy (reference rows)
=============  =====================================================  =========

It prints the median req/s of the runs, the server's CPU time per request
(the hypercorn worker's user+system time over the run divided by the requests:
steadier than req/s on a shared machine), and the ratios with targets: our
default server >= 1.35x plain at C=200; bare ASGI on the fast transport >= 2x on
stock. It exits 1 if a target is missed or a run fails, 2 without wrk. The
ceiling is the unguarded app because a lock held across a checkpoint costs the
same on both transports under load (one holder per scheduling round) and so
hides part of what the transport costs; the lock-guarded pair is printed beside
it for that comparison. Loopback only; every server is stopped however the run
ends.

hypercorn's worker loads ``benchmarks.reference:served("bare")`` (or
``"bare+lock"``, ``"plain"``), which installs the transport named by
``TRIO_COUNTERS_TRANSPORT`` in the worker before it serves (trio_counters:app
does that itself on import). ``benchmarks.framework`` measures the request
pipeline (``TRIO_COUNTERS_PIPELINE``) the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trio

from trio_counters.testing import Server, ServerError, cpu_seconds, serving

from . import wrk
from .strategies import ROOT, leaves

PATH = "/inc?name=j"
TARGET_OURS_VS_PLAIN = 1.35
TARGET_BARE_FAST_VS_STOCK = 2.0


@dataclass(frozen=True)
class Config:
    label: str
    app: str
    transport: str
    #: ``TRIO_COUNTERS_PIPELINE``, if set: ``lean`` or ``stock``.
    pipeline: str | None = None

    @property
    def env(self) -> dict[str, str]:
        env = {"TRIO_COUNTERS_TRANSPORT": self.transport}
        if self.pipeline is not None:
            env["TRIO_COUNTERS_PIPELINE"] = self.pipeline
        return env


CONFIGS = (
    Config("plain", 'benchmarks.reference:served("plain")', "stock"),
    Config("ours/stock", "trio_counters:app", "stock"),
    Config("ours/fast", "trio_counters:app", "fast"),
    Config("bare/stock", 'benchmarks.reference:served("bare")', "stock"),
    Config("bare/fast", 'benchmarks.reference:served("bare")', "fast"),
    Config("bare+lock/stock", 'benchmarks.reference:served("bare+lock")', "stock"),
    Config("bare+lock/fast", 'benchmarks.reference:served("bare+lock")', "fast"),
)


@dataclass
class Sample:
    rps: float
    requests: int
    errors: int
    cpu_us: float


Samples = dict[tuple[str, int], list[Sample]]


async def measure(server: Server, connections: int, duration: float) -> Sample:
    """One wrk run against ``server``; its worker's CPU time per request over the run."""
    worker = server.worker
    before = cpu_seconds(worker)
    result = await wrk.run(server.url + PATH, connections, duration)
    used = cpu_seconds(worker) - before
    return Sample(result.rate, result.requests, result.errors, used * 1e6 / max(result.requests, 1))


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


async def collect(args: argparse.Namespace, configs: tuple[Config, ...] = CONFIGS) -> Samples:
    """Every server up at once; the warm-up, then ``--runs`` rounds of wrk runs."""
    samples: dict[tuple[str, int], list[Sample]] = {}
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        servers = {}
        for config in configs:
            servers[config.label] = await stack.enter_async_context(serving(config.app, env=config.env, cwd=ROOT))
        for server in servers.values():  # warm up: imports, first connections, caches
            await measure(server, max(args.concurrency), 1)
        for run in range(args.runs):
            for connections in args.concurrency:
                for label, server in servers.items():
                    samples.setdefault((label, connections), []).append(
                        await measure(server, connections, args.duration)
                    )
            print(f"  run {run + 1}/{args.runs} done ({time.monotonic() - started:.0f} s)", flush=True)
    return samples


#: Median req/s and median CPU per request, by (row, concurrency).
Medians = tuple[dict[tuple[str, int], float], dict[tuple[str, int], float]]


def table(concurrency: list[int], configs: tuple[Config, ...], samples: Samples) -> Medians:
    """Print each concurrency's table of rows; the medians, for the ratios."""
    rps: dict[tuple[str, int], float] = {}
    cpu: dict[tuple[str, int], float] = {}
    width = max(len(config.label) for config in configs) + 2
    for connections in concurrency:
        print(f"\nC={connections}")
        print(f"  {'row':<{width}} {'req/s (median)':>14}   {'runs':<22} {'CPU us/req':>10} {'errors':>6}")
        for config in configs:
            key = (config.label, connections)
            runs = samples[key]
            rps[key] = statistics.median(s.rps for s in runs)
            cpu[key] = statistics.median(s.cpu_us for s in runs)
            listed = " ".join(f"{s.rps:.0f}" for s in runs)
            errors = sum(s.errors for s in runs)
            print(f"  {config.label:<{width}} {rps[key]:>14.0f}   {listed:<22} {cpu[key]:>10.0f} {errors:>6}")
    print(
        "\nratios A / B: of median req/s (what the targets are set on) and, in brackets, of"
        "\nworker CPU per request, B's over A's (capacity; less disturbed by other load)"
    )
    return rps, cpu


def ratio(medians: Medians, a: str, b: str, connections: int, target: float | None = None) -> bool:
    """Print the ratio of row ``a`` to row ``b``, and its verdict if it has a target;
    whether it missed the target."""
    rps, cpu = medians
    value = rps[(a, connections)] / rps[(b, connections)]
    capacity = cpu[(b, connections)] / cpu[(a, connections)]
    missed = target is not None and value < target
    verdict = "" if target is None else f"  target >= {target:g}: {'MISSED' if missed else 'met'}"
    print(f"    {a + ' / ' + b:<36} {value:5.2f}x  (CPU {capacity:4.2f}x){verdict}")
    return missed


def report(args: argparse.Namespace, samples: Samples) -> int:
    """The table per concurrency and the ratios; how many targets were missed."""
    from trio_counters.transport import DEFAULT_TRANSPORT

    medians = table(args.concurrency, CONFIGS, samples)
    default = f"ours/{DEFAULT_TRANSPORT}"
    failures = 0
    for connections in args.concurrency:
        print(f"  C={connections}")
        if connections == 200:
            failures += ratio(medians, default, "plain", connections, TARGET_OURS_VS_PLAIN)
        for a, b, target in (
            ("ours/stock", "plain", None),
            ("ours/fast", "plain", None),
            ("ours/fast", "ours/stock", None),
            ("bare/stock", "plain", None),
            ("bare/fast", "bare/stock", TARGET_BARE_FAST_VS_STOCK),
            ("bare+lock/fast", "bare+lock/stock", None),
            ("bare+lock/fast", "bare/fast", None),
        ):
            failures += ratio(medians, a, b, connections, target)
    return failures


def command_line(prog: str, doc: str, argv: list[str] | None) -> argparse.Namespace:
    """The options these wrk benchmarks share: --runs, --duration, --concurrency."""
    parser = argparse.ArgumentParser(
        prog=f"python -m {prog}",
        description=doc.split("\n\n")[0],
        epilog=f"usage, from the repository root:\n  .venv/bin/python -m {prog} [--runs 1 --duration 2]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per row and concurrency (3)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run (3)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[10, 200], help="keep-alive connections")
    args = parser.parse_args(argv)
    if args.runs < 1 or not args.duration > 0 or min(args.concurrency) < 1:
        parser.error("--runs, --duration and --concurrency must be positive")
    return args


def run_and_report(
    args: argparse.Namespace, configs: tuple[Config, ...], report: Callable[[argparse.Namespace, Samples], int]
) -> int:
    """Collect the samples, then report them; the exit status: 0, 1 if a target was
    missed or a run failed, 2 without wrk."""
    if not wrk.available():
        print("wrk is not on PATH (apt-get install wrk)", file=sys.stderr)
        return 2
    started = time.monotonic()
    samples = None
    try:
        samples = trio.run(collect, args, configs)
    except* (ServerError, wrk.WrkError, trio.TooSlowError) as group:
        for error in leaves(group):
            print(f"error: {error}", file=sys.stderr)
    if samples is None:
        return 1
    failures = report(args, samples)
    print(f"\ntargets missed: {failures}; total {time.monotonic() - started:.0f} s")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    args = command_line("benchmarks.throughput", __doc__, argv)
    from trio_counters.transport import DEFAULT_TRANSPORT

    print(f"machine: {machine()}")
    print(
        f"load: wrk -t1, keep-alive, GET {PATH}, {args.duration:g} s per run, "
        f"median of {args.runs}; trio_counters' default transport: {DEFAULT_TRANSPORT}"
    )
    return run_and_report(args, CONFIGS, report)


if __name__ == "__main__":
    sys.exit(main())
