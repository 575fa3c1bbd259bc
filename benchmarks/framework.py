"""What the framework costs per request: trio_counters on each request pipeline against
a plain QuartTrio handler and the bare ASGI ceiling.

Run from the repository root, after ``pip install -e .``::

    .venv/bin/python -m benchmarks.framework
    .venv/bin/python -m benchmarks.framework --runs 1 --duration 2

It starts six real ``hypercorn --worker-class trio`` servers through
:mod:`trio_counters.testing` and loads each with ``wrk -t1`` over keep-alive
connections, ``GET /inc?name=j``, at each concurrency (10 and 200), round-robin,
``--runs`` times (the machinery of :mod:`benchmarks.throughput`):

===================  ===============================================  =========  ========
row                  app                                               transport  pipeline
===================  ===============================================  =========  ========
plain                benchmarks.plain_quart: QuartTrio, dict update,   stock      stock
                     ``return "ok"`` (what one writes by hand)
plain/fast/stock     the same                                          fast       stock
plain/fast/lean      the same                                          fast       lean
ours/fast/stock      trio_counters:app, default (lock) store, every    fast       stock
                     check, metric and timeout
ours/fast/lean       the same                                          fast       lean
bare/fast            benchmarks.bare_asgi ``unguarded_app``: no         fast       --
                     framework; the ceiling
===================  ===============================================  =========  ========

It prints the median req/s, the server's CPU time per request (its worker's
user+system time over the run divided by the requests: steadier than req/s on a
shared machine), and the ratios with targets:

* our server >= 1.0x the plain handler on the same transport and pipeline, C=10;
* our default server >= 2.0x the plain handler on stock hypercorn at C=200, and
  >= 1.6x at C=10;
* our default server >= 0.5x the bare ASGI ceiling on the same transport, C=200.

It exits 1 if a target is missed or a run fails, 2 without wrk. Every server
is stopped however the run ends. Other ``TRIO_COUNTERS_*`` settings in the
environment reach every server but act in our two rows only
(``TRIO_COUNTERS_GC_THRESHOLD=50000``, say: the reference apps never start
trio_counters' app).
"""

from __future__ import annotations

import argparse
import os
import sys

from trio_counters.config import DEFAULT_PIPELINE
from trio_counters.transport import DEFAULT_TRANSPORT

from .throughput import PATH, Config, Samples, command_line, machine, ratio, run_and_report, table

#: (numerator, denominator, concurrency, target): the ratios the issue sets.
DEFAULT = f"ours/{DEFAULT_TRANSPORT}/{DEFAULT_PIPELINE}"
TARGETS = (
    ("ours/fast/lean", "plain/fast/lean", 10, 1.0),
    (DEFAULT, "plain", 200, 2.0),
    (DEFAULT, "plain", 10, 1.6),
    (DEFAULT, f"bare/{DEFAULT_TRANSPORT}", 200, 0.5),
)
#: Ratios printed without a target, for reading the rows against each other.
OTHER_RATIOS = (
    ("ours/fast/stock", "plain/fast/stock"),
    ("ours/fast/lean", "plain/fast/lean"),
    ("ours/fast/lean", "ours/fast/stock"),
    ("plain/fast/lean", "plain/fast/stock"),
    ("plain/fast/stock", "plain"),
    (DEFAULT, "plain"),
    (DEFAULT, f"bare/{DEFAULT_TRANSPORT}"),
)


def configs() -> tuple[Config, ...]:
    """The six rows (the environment's other TRIO_COUNTERS_* settings act in ours only)."""
    plain = 'benchmarks.reference:served("plain")'
    return (
        Config("plain", plain, "stock", "stock"),
        Config("plain/fast/stock", plain, "fast", "stock"),
        Config("plain/fast/lean", plain, "fast", "lean"),
        Config("ours/fast/stock", "trio_counters:app", "fast", "stock"),
        Config("ours/fast/lean", "trio_counters:app", "fast", "lean"),
        Config("bare/fast", 'benchmarks.reference:served("bare")', "fast"),
    )


def report(args: argparse.Namespace, samples: Samples) -> int:
    """The table per concurrency and the ratios; how many targets were missed."""
    medians = table(args.concurrency, configs(), samples)
    failures = 0
    for connections in args.concurrency:
        print(f"  C={connections}")
        lines = [(a, b, target) for a, b, c, target in TARGETS if c == connections]
        lines += [(a, b, None) for a, b in OTHER_RATIOS if not any((a, b) == (x, y) for x, y, _ in lines)]
        for a, b, target in lines:
            failures += ratio(medians, a, b, connections, target)
    return failures


def main(argv: list[str] | None = None) -> int:
    args = command_line("benchmarks.framework", __doc__, argv)
    settings = {key: value for key, value in os.environ.items() if key.startswith("TRIO_COUNTERS_")}
    print(f"machine: {machine()}")
    print(
        f"load: wrk -t1, keep-alive, GET {PATH}, {args.duration:g} s per run, median of {args.runs}; "
        f"our default: {DEFAULT}; other settings: {settings or 'none'}"
    )
    return run_and_report(args, configs(), report)


if __name__ == "__main__":
    sys.exit(main())
