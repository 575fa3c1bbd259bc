"""Checks the tests share beyond a single answer: a well-behaved client that keeps
asking while others misbehave, a server log with no unexpected traceback, and
failures that read as the one exception they are.
"""

from __future__ import annotations

import statistics
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager

import h11
import trio

from .http import TRANSPORT_ERRORS, Connection, Reply, request
from .server import Server

__all__ = ["Witness", "assert_no_tracebacks", "one_error"]


class Witness:
    """A well-behaved client that keeps asking while others misbehave.

    Two loops, paced a few milliseconds apart: one keep-alive connection, and a new
    connection per request. Records every latency and every failure.
    """

    def __init__(self, port: int, name: str = "i") -> None:
        self.port = port
        self.target = f"/get?name={name}"
        self.latencies: list[float] = []
        self.failures: list[str] = []
        #: Keep-alive requests retried once on a new connection: see _keep_alive.
        self.retried = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Ask until cancelled: ``await nursery.start(witness.run)``."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._keep_alive)
            nursery.start_soon(self._new_connections)
            task_status.started()

    async def _timed(self, call: Callable[[], Awaitable[Reply]], start: float | None = None) -> None:
        retry = start is not None
        start = trio.current_time() if start is None else start
        try:
            reply = await call()
        except (*TRANSPORT_ERRORS, ConnectionError) as error:
            self.failures.append(f"{'retry' if retry else 'new connection'}: {error!r}")
            return
        self._record(reply, start)

    def _record(self, reply: Reply, start: float) -> None:
        self.latencies.append(trio.current_time() - start)
        if reply.status != 200:
            self.failures.append(f"status {reply.status}")

    async def _keep_alive(self) -> None:
        while True:
            async with await Connection.open(self.port) as connection:
                answered_here = 0
                # hypercorn closes a connection after 1000 requests (keep_alive_max_requests).
                while connection.h11.our_state is not h11.MUST_CLOSE:
                    start = trio.current_time()
                    try:
                        reply = await connection.request(self.target)
                    except (*TRANSPORT_ERRORS, ConnectionError) as error:
                        # A reused keep-alive connection can be closed by the server's
                        # idle deadline just as the next request goes out (on a loaded
                        # machine the 5 ms pause can stretch past it); a client then
                        # retries an idempotent GET once on a new connection (RFC 9112
                        # section 9.3.1). A connection that never answered is a failure.
                        nothing_came = isinstance(error, TRANSPORT_ERRORS) or "state=SEND_RESPONSE" in str(error)
                        if nothing_came and answered_here:
                            self.retried += 1
                            await self._timed(lambda: request(self.port, self.target), start)
                        else:
                            self.failures.append(f"keep-alive connection: {error!r}")
                        break
                    self._record(reply, start)
                    answered_here += 1
                    await trio.sleep(0.005)

    async def _new_connections(self) -> None:
        while True:
            await self._timed(lambda: request(self.port, self.target))
            await trio.sleep(0.01)

    def check(self, *, minimum: int, below: float) -> str:
        """Assert every request was answered 200, at least ``minimum`` of them, none
        taking ``below`` seconds or more; a one-line summary."""
        assert not self.failures, self.failures[:5]
        assert len(self.latencies) >= minimum, f"only {len(self.latencies)} answers"
        worst = max(self.latencies)
        assert worst < below, f"a well-behaved client waited {worst:.2f} s"
        median = statistics.median(self.latencies)
        return (
            f"witness: {len(self.latencies)} answers, "
            f"median {median * 1000:.1f} ms, worst {worst * 1000:.0f} ms"
        )


def assert_no_tracebacks(server: Server) -> None:
    """The server logged no traceback."""
    unexpected = server.tracebacks()
    assert not unexpected, "\n".join(unexpected)


@asynccontextmanager
async def one_error() -> AsyncIterator[None]:
    """Re-raise a lone exception out of trio's exception groups, for readable failures."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        if len(leaves) == 1:
            raise leaves[0] from None
        raise


def _leaves(group: BaseExceptionGroup) -> Iterator[BaseException]:
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            yield from _leaves(error)
        else:
            yield error
