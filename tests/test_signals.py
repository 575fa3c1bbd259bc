"""SIGINT twice under load, end to end: the real hypercorn process still ends within
its graceful timeout, with exit code 0, and no client hangs.

The impatient second Ctrl-C comes once shutdown has begun, while keep-alive clients
keep asking and requests stuck waiting for their body keep the graceful shutdown
busy; it goes to the whole process group (a terminal's Ctrl-C: hypercorn's parent
and its worker) or to the parent alone (``kill -INT``).

The test prints what it measured (``pytest -s`` shows it).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest
import trio

from trio_counters.app import BODY_TIMEOUT
from trio_counters.config import SAFE_STRATEGIES
from trio_counters.testing import (
    TRANSPORT_ERRORS,
    Connection,
    Server,
    form_post_bytes,
    read_until_closed,
)
from trio_counters.testing.checks import assert_no_tracebacks

StartServer = Callable[..., Awaitable[Server]]

#: ``--keep-alive`` in seconds, as for the other tests of misbehaving clients.
KEEP_ALIVE = 2
#: ``--graceful-timeout`` here (hypercorn's default is 3 s): short, to keep the test short.
GRACEFUL_TIMEOUT = 1
#: Only guards against a hang: a pass never comes near it.
HANG = 30


def _interrupt(server: Server, to: str) -> None:
    """Ctrl-C in a terminal (``"group"``: hypercorn's parent and its worker), or ``kill -INT``."""
    with contextlib.suppress(ProcessLookupError):  # already gone: nothing left to interrupt
        if to == "group":
            os.killpg(server.process.pid, signal.SIGINT)
        else:
            server.send_signal(signal.SIGINT)


@pytest.mark.parametrize(
    ("strategy", "to"),
    [(strategy, "group") for strategy in SAFE_STRATEGIES] + [("lock", "parent")],
)
async def test_sigint_twice_under_load_still_ends_within_the_graceful_timeout(
    start_server: StartServer, strategy: str, to: str
) -> None:
    """``to="group"`` is Ctrl-C in a terminal, which signals hypercorn's parent and its
    worker; ``"parent"`` is ``kill -INT``. Requests stuck waiting for a body keep the
    graceful shutdown busy until its timeout (1 s here, to keep the test short)."""
    server = await start_server(
        strategy, "--keep-alive", str(KEEP_ALIVE), "--graceful-timeout", str(GRACEFUL_TIMEOUT)
    )
    answered = 0
    statuses: Counter[int] = Counter()
    ended = 0
    loaded = trio.Event()
    first_close = trio.Event()
    last_stuck_sent = 0.0

    async def client() -> None:
        nonlocal answered, ended
        try:
            async with await Connection.open(server.port) as connection:
                while True:
                    reply = await connection.request("/inc?name=i")
                    statuses[reply.status] += 1
                    answered += 1
                    if answered >= 300:
                        loaded.set()
        except (*TRANSPORT_ERRORS, ConnectionError):
            ended += 1  # the server closed this connection as it shut down
            first_close.set()

    async def stuck() -> None:
        nonlocal last_stuck_sent
        async with await trio.open_tcp_stream(server.host, server.port) as stream:
            last_stuck_sent = trio.current_time()
            await stream.send_all(form_post_bytes("/inc", b"name", length=50))
            await read_until_closed(stream)

    with trio.fail_after(BODY_TIMEOUT + HANG):
        async with trio.open_nursery() as clients:
            for _ in range(40):
                clients.start_soon(client)
            for _ in range(5):
                clients.start_soon(stuck)
            await loaded.wait()
            start = trio.current_time()
            _interrupt(server, to)
            await first_close.wait()  # shutting down: now the impatient second Ctrl-C
            _interrupt(server, to)
            code = await server.wait(timeout=BODY_TIMEOUT + HANG)
            exited = trio.current_time()
    took = exited - start
    print(
        f"{strategy}, SIGINT x2 to the {to}: exit code {code} after {took:.2f} s; "
        f"answers {dict(statuses)}"
    )
    assert code == 0, server.log
    # Without the graceful timeout, shutdown would wait for the stuck requests, which
    # only the app's body timeout ends (BODY_TIMEOUT after they were sent): the exit
    # came before that, so the graceful timeout ended them.
    assert exited < last_stuck_sent + BODY_TIMEOUT, took
    assert ended == 40  # every client saw its connection end; none hung
    assert set(statuses) <= {200, 503}, statuses
    assert_no_tracebacks(server)
