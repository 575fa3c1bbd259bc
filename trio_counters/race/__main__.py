"""``python -m trio_counters.race``: watch n increments race, step by step, in each strategy."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from typing import TextIO

import trio

from ..config import IN_PROCESS_STRATEGIES
from . import svg, terminal
from .run import run_race
from .timeline import DRAWN_UP_TO, Timeline

DEFAULT_N = 4

DESCRIPTION = f"""\
Start n increments of one fresh counter together, in each strategy, through the
same store code the server runs, and show what each task did, step by step.

The trace is recorded, not scripted: the store reports each step through its
tracer (read, checkpoint, write, lock, send, apply, ...) and a trio instrument
sees the scheduler.

Rows are tasks: inc1..incN (numbered in the order they first ran) and, for
channel, the manager. Columns are scheduling batches: in each pass of its run
loop trio runs every task that was ready when the pass began, once each, and a
task woken during the pass waits for the next. A batch is what "ran together"
means in trio, so the naive race reads as two columns: every read, then every
write. (A column per task step would draw the same thing as a staircase.)
Within a cell, lines are in the order they happened; "…" means the task was
waiting, "ran" a step with nothing to report.

Below each timeline: the final value, the expected one, the updates lost, and
for naive which write erased which increment. Above n={DRAWN_UP_TO}, a summary
(reads per value seen, batches, the manager's turn sizes) replaces the rows.
Colour on a terminal; plain when piped or with NO_COLOR set.

With --durable each store keeps its counts in a fresh SQLite file (a temporary
one per strategy, deleted afterwards), as with the database setting: the
checkpoint becomes a real commit ("commits"), naive and lock commit once per
increment, and the manager commits its whole turn as one transaction.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trio_counters.race",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-n", type=int, default=DEFAULT_N, help=f"increments started together (default {DEFAULT_N})"
    )
    parser.add_argument(
        "--strategies",
        default=",".join(IN_PROCESS_STRATEGIES),
        help="comma-separated, from %(default)s (default: all three)",
    )
    parser.add_argument(
        "--durable",
        action="store_true",
        help="commit to a fresh temporary SQLite file per strategy, as with the database setting",
    )
    parser.add_argument(
        "--svg", metavar="FILE", help=f"also draw the timelines as SVG (n up to {DRAWN_UP_TO})"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the recorded events and verdicts as JSON"
    )
    parser.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="auto: colour only on a terminal and without NO_COLOR (default)",
    )
    args = parser.parse_args(argv)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in strategies if s not in IN_PROCESS_STRATEGIES]
    if unknown or not strategies:
        choices = ", ".join(IN_PROCESS_STRATEGIES)
        parser.error(f"--strategies: choose from {choices} (got {args.strategies!r})")
    if args.n < 1:
        parser.error("-n must be at least 1")
    if args.svg and args.n > DRAWN_UP_TO:
        parser.error(f"--svg draws up to {DRAWN_UP_TO} rows; use a smaller -n")

    # The naive store logs its first loss; here the loss is the point.
    logging.getLogger("trio_counters.stores.naive").setLevel(logging.ERROR)
    timelines = trio.run(_races, strategies, args.n, args.durable)

    drawn = args.n <= DRAWN_UP_TO
    if args.svg:
        with open(args.svg, "w", encoding="utf-8") as file:
            file.write(svg.render(timelines))
    if args.json:
        data = {"n": args.n, "races": [t.as_json(grid=drawn) for t in timelines]}
        json.dump(data, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    colour = use_colour(args.color, sys.stdout, os.environ)
    width = shutil.get_terminal_size((120, 24)).columns
    for i, t in enumerate(timelines):
        if i:
            sys.stdout.write("\n")
        if drawn:
            sys.stdout.write(terminal.render(t, colour=colour, width=width))
        else:
            sys.stdout.write(terminal.render_summary(t, colour=colour))
    return 0


def use_colour(choice: str, stream: TextIO, environ: Mapping[str, str]) -> bool:
    """``always``, ``never``, or ``auto``: only on a terminal, and not with NO_COLOR set."""
    if choice != "auto":
        return choice == "always"
    return stream.isatty() and not environ.get("NO_COLOR")


async def _races(strategies: list[str], n: int, durable: bool) -> list[Timeline]:
    if not durable:
        return [Timeline(await run_race(strategy, n)) for strategy in strategies]
    timelines = []
    with tempfile.TemporaryDirectory(prefix="trio_counters-race-") as folder:
        for strategy in strategies:
            database = os.path.join(folder, f"{strategy}.db")
            timelines.append(Timeline(await run_race(strategy, n, database=database)))
    return timelines


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # piped into head, say: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
