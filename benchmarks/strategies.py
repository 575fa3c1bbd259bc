"""Which server a benchmark's strategy name means, served through the shared harness.

``naive``, ``lock``, ``channel`` and ``redis`` are trio_counters' stores
(``TRIO_COUNTERS_STORE``); ``-db`` keeps an in-process store's counts in an SQLite
file (``naive-db``, ``lock-db``, ``channel-db``: a fresh temporary file per server,
deleted when it stops); ``-wN`` asks hypercorn for N workers (``lock-w2``,
``redis-w2``); ``bare`` is the bare ASGI ceiling (``benchmarks.bare_asgi``'s unguarded
counter, on the transport trio_counters serves with) and ``bare-lock`` the same app
guarded like ``lock``.
Every server runs from the repository root, where hypercorn imports
``benchmarks.*`` apps from.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AsyncExitStack, ExitStack, asynccontextmanager
from pathlib import Path
from typing import TypeVar

import trio

from trio_counters.testing import Server, ServerError, serving

from .client import Target

__all__ = ["ROOT", "BARE_APP", "BARE_LOCK_APP", "DURABLE_SUFFIX", "strategy_server", "serve_strategy", "serve_side_by_side", "leaves", "run_script"]

T = TypeVar("T")

#: The repository root: hypercorn's working directory.
ROOT = Path(__file__).resolve().parent.parent
#: bench.py's ceiling: the bare ASGI counter, unguarded, on the same transport as the
#: strategies' servers (``TRIO_COUNTERS_TRANSPORT``, installed in the worker as
#: ``import trio_counters`` does).
BARE_APP = 'benchmarks.reference:served("bare")'
#: The same counter guarded step for step like the lock strategy (``bare-lock``).
BARE_LOCK_APP = 'benchmarks.reference:served("bare+lock")'
#: A strategy name ending so (``lock-db``) keeps its counts in a fresh SQLite file.
DURABLE_SUFFIX = "-db"


def strategy_server(strategy: str) -> tuple[str, dict[str, str], tuple[str, ...]]:
    """The app, extra environment and hypercorn arguments for one strategy name
    (a durable one's file is chosen by :func:`serve_strategy`)."""
    if strategy == "bare":
        return BARE_APP, {}, ()
    if strategy == "bare-lock":
        return BARE_LOCK_APP, {}, ()
    store, _, workers = strategy.partition("-w")  # redis-w2: redis, 2 workers
    store = store.removesuffix(DURABLE_SUFFIX)
    return "trio_counters:app", {"TRIO_COUNTERS_STORE": store}, ("--workers", workers) if workers else ()


@asynccontextmanager
async def serve_strategy(
    strategy: str, *, settings: Mapping[str, str] | None = None, **options: object
) -> AsyncIterator[Server]:
    """``async with serve_strategy("lock") as server:`` the real server for ``strategy``;
    ``settings`` (``TRIO_COUNTERS_*``) are added to its environment, under the strategy's own.
    A durable strategy (``lock-db``) gets a fresh SQLite file, removed once the server stops."""
    app, env, args = strategy_server(strategy)
    with ExitStack() as files:
        if DURABLE_SUFFIX in strategy:
            folder = files.enter_context(tempfile.TemporaryDirectory(prefix="trio_counters-bench-"))
            env = {**env, "TRIO_COUNTERS_DATABASE": os.path.join(folder, "counters.db")}
        async with serving(app, env={**(settings or {}), **env}, args=args, cwd=ROOT, **options) as server:
            yield server


async def serve_side_by_side(
    stack: AsyncExitStack, strategies: Iterable[str]
) -> tuple[dict[str, Target], dict[str, int]]:
    """Start a server per strategy in ``stack`` (stopped when it closes): where each
    listens, and its worker's pid, for its CPU time."""
    targets, pids = {}, {}
    for strategy in strategies:
        server = await stack.enter_async_context(serve_strategy(strategy))
        targets[strategy], pids[strategy] = Target(server.host, server.port), server.worker
    return targets, pids


def leaves(group: BaseExceptionGroup) -> list[BaseException]:
    """The exceptions in a (nested) exception group, in order: a server that fails to
    start comes out of the harness's nursery, and a benchmark's own, wrapped in groups."""
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


def only_interrupts(error: BaseException) -> bool:
    """Whether ``error`` is Ctrl-C alone (a KeyboardInterrupt, or a group of only those)."""
    if isinstance(error, BaseExceptionGroup):
        _, rest = error.split(KeyboardInterrupt)
        return rest is None
    return isinstance(error, KeyboardInterrupt)


def run_script(prog: str, main: Callable[[T], Awaitable[int]], args: T) -> int:
    """``trio.run(main, args)`` as a script's exit status: Ctrl-C is 130 (the harness has
    stopped the server by then), a server that did not start is 1 with its own reason
    from its log; anything else is a bug and goes up as a traceback."""
    try:
        return int(trio.run(main, args))
    except BaseException as error:
        if only_interrupts(error):
            print("interrupted", file=sys.stderr)
            return 130
        found = leaves(error) if isinstance(error, BaseExceptionGroup) else [error]
        if not all(isinstance(exc, ServerError) for exc in found):
            raise
        for exc in found:
            print(f"{prog}: {exc}", file=sys.stderr)
        return 1
