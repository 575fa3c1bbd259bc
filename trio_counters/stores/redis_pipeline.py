"""A Redis client for trio that sends everything its tasks ask for as one pipelined write.

:class:`PipelinedRedis` wraps one ``coredis`` client and uses one connection. It
knows nothing of what the commands mean: it queues them, sends them, and hands
back each reply or error to the task that asked. :func:`redact` shows a Redis URL
without its password.

**One connection, one write per scheduling round.** Callers do not talk to the
connection themselves: :meth:`~PipelinedRedis.execute` queues the command, and a
dispatcher task sends everything queued as one pipelined batch
(``create_request_batch``), then waits for the replies, which Redis sends in
order, and hands them out. (coredis' per-command path, a request per call, takes
one queued command per scheduling round into its socket writer: under many
concurrent callers the writer falls far behind, because a busy trio worker's
round is long.) A call cancelled before its batch leaves is dropped, so it never
runs.

**No retries.** A command whose reply was lost may have run, and sending it again
could run it twice, so coredis' automatic retries are off. Every failure goes back
to its caller: coredis' ``RedisError`` (refused or lost connection, an error
reply), ``TimeoutError`` (coredis' own bound on connecting), :class:`RedisSilent`,
or :class:`PipelineClosed`.

**Silence, watched whoever waits.** ``timeout`` bounds Redis' silence, not a
call's wait: once a connection with replies owed has received nothing for that
long since the oldest unanswered batch went out (Redis stalled, or a black-holed
path -- a TCP connection to a host that vanished can stay open for many minutes),
every call owed a reply on it gets :class:`RedisSilent`, the connection is dropped,
``on_silence`` is called, and the next batch connects afresh. A watchdog task does
this, not the callers: a caller may give up sooner (the app's ``store_timeout``, a
client that hung up), and if the check waited on callers, a stall with nobody
waiting long enough would never be noticed -- batches would pile up unsent on the
stalled connection. The watchdog awaits on every pass, so no ``timeout`` can make
it spin. Replies already waiting in the kernel, unread because this worker's
scheduling round is long, are not silence. Connecting (TCP and handshake) is
bounded by ``timeout`` too.

**Lifecycle.** ``async with redis.open():`` holds the client open and runs the
dispatcher and the watchdog; leaving the block closes the client and its
connection and fails every call still waiting with :class:`PipelineClosed`.
:meth:`~PipelinedRedis.close` refuses new calls at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import coredis
import trio
from anyio.abc import SocketAttribute
from coredis.commands.request import CommandRequest
from coredis.connection import BaseConnection
from coredis.exceptions import RedisError
from coredis.retry import NoRetryPolicy

from ..config import redact

__all__ = ["PipelineClosed", "PipelinedRedis", "RedisSilent", "redact"]


class RedisSilent(Exception):
    """Redis sent nothing for a whole ``timeout`` while it owed replies."""


class PipelineClosed(Exception):
    """The client is not open (not yet, or no longer): the call was not sent, or its
    reply will never be read."""


def _unread(connection: BaseConnection) -> bool:
    """Whether bytes from Redis wait in the kernel, not yet read by the connection."""
    stream = connection.stream
    raw = stream.extra(SocketAttribute.raw_socket, None) if stream is not None else None
    if raw is None:
        return False
    try:
        raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except OSError:  # BlockingIOError: nothing there
        return False
    return True  # data, or EOF: either way the reader has news to act on


@dataclasses.dataclass(eq=False)
class _Call:
    """One queued command and, once the dispatcher has it back, its reply."""

    command: CommandRequest[Any]
    #: Its requester has gone (cancelled or timed out): if not sent yet, never send it.
    abandoned: bool = False
    done: trio.Event = dataclasses.field(default_factory=trio.Event)
    #: The reply, or the exception to raise.
    result: Any = None

    def resolve(self, result: Any) -> None:
        if not self.done.is_set():
            self.result = result
            self.done.set()


@dataclasses.dataclass(eq=False)
class _Batch:
    """Calls sent together on one connection, whose replies are owed."""

    connection: BaseConnection
    calls: list[_Call]
    #: coredis' request for the whole batch: awaited by _deliver, complete once
    #: every reply is in.
    request: Any = None
    sent_at: float = dataclasses.field(default_factory=time.perf_counter)


class PipelinedRedis:
    """One coredis client and one connection, shared by every task through a queue."""

    def __init__(
        self, url: str, *, timeout: float, on_silence: Callable[[], None] = lambda: None
    ) -> None:
        self.url = url
        self.timeout = timeout
        #: Called when the watchdog drops a silent connection (whoever was waiting).
        self.on_silence = on_silence
        # Set only while open() holds the client, and not after close().
        self._client: coredis.Redis[str] | None = None
        self._closed = False
        # Calls waiting for the dispatcher, and the event that wakes it.
        self._queue: list[_Call] = []
        self._queued = trio.Event()
        # The one connection every batch goes out on (Redis answers in order).
        self._connection: BaseConnection | None = None
        # Batches sent and not yet handed out, in the order sent; the event that
        # wakes the watchdog when one is sent.
        self._in_flight: list[_Batch] = []
        self._sent = trio.Event()

    @property
    def queued(self) -> int:
        """Calls queued for the next batch, not sent yet."""
        return len(self._queue)

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[None]:
        """Hold the client open and dispatch calls for as long as the block runs."""
        if self._closed:
            yield
            return
        client: coredis.Redis[str] = coredis.Redis.from_url(
            self.url,
            decode_responses=True,
            retry_policy=NoRetryPolicy(),  # never resend a command whose reply was lost
            connect_timeout=self.timeout,
            # No per-reply timeout: the watchdog times Redis' silence instead.
        )
        async with client:
            self._client = client
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._dispatch, client, nursery)
                    nursery.start_soon(self._watch_silence)
                    yield
                    nursery.cancel_scope.cancel()
            finally:
                self._client = self._connection = None
                for call in self._queue:
                    call.resolve(PipelineClosed())
                self._queue.clear()
                self._in_flight.clear()  # each _deliver, cancelled, failed its calls

    def close(self) -> None:
        """Refuse new calls from now on; the client closes when ``open()``'s block ends."""
        self._closed = True
        self._client = None

    async def execute(self, *command: Any) -> Any:
        """Queue one command for the next batch; its reply, or raise its error."""
        if self._client is None:
            await trio.lowlevel.checkpoint()
            raise PipelineClosed
        call = _Call(CommandRequest(command[0], *command[1:], execution_parameters={"decode": True}))
        self._queue.append(call)
        self._queued.set()
        try:
            # Always answered: by the reply, by the dispatcher (connecting failed),
            # by the watchdog (silence) or when open() ends.
            await call.done.wait()
        except BaseException:
            call.abandoned = True  # cancelled: if it has not gone out, it never will
            raise
        if isinstance(call.result, BaseException):
            raise call.result
        return call.result

    async def _dispatch(self, client: coredis.Redis[str], nursery: trio.Nursery) -> None:
        """Send what is queued as one batch, over and over; never raises for Redis."""
        while True:
            await self._queued.wait()
            self._queued = trio.Event()
            try:
                connection = await self._live_connection(client)
            except (RedisSilent, TimeoutError, RedisError) as error:
                calls, self._queue = self._queue, []
                for call in calls:
                    call.resolve(RedisSilent() if isinstance(error, RedisSilent) else error)
                continue
            calls, self._queue = [call for call in self._queue if not call.abandoned], []
            if not calls:
                continue
            batch = _Batch(connection, calls)
            batch.request = connection.create_request_batch([call.command for call in calls])
            self._in_flight.append(batch)
            self._sent.set()
            nursery.start_soon(self._deliver, batch)

    async def _live_connection(self, client: coredis.Redis[str]) -> BaseConnection:
        connection = self._connection
        if connection is not None and connection.usable:
            return connection
        self._connection = None
        with trio.move_on_after(self.timeout):
            # Made in the pool's task group (the client's lifetime), then handed
            # straight back: nothing else takes connections from this pool.
            connection = await client.connection_pool.get_connection()
            client.connection_pool.release(connection)
            self._connection = connection
            return connection
        raise RedisSilent

    async def _deliver(self, batch: _Batch) -> None:
        try:
            results = await batch.request  # in order; a lost connection fails the rest
        except BaseException:
            # Cancelled: the client is closing. Nobody waits forever.
            for call in batch.calls:
                call.resolve(PipelineClosed())
            raise
        finally:
            if batch in self._in_flight:
                self._in_flight.remove(batch)
        for call, result in zip(batch.calls, results, strict=True):
            call.resolve(result)

    async def _watch_silence(self) -> None:
        """Drop the connection once Redis, owing replies, has been silent for ``timeout``.

        Every pass awaits (a checkpoint even when there is nothing to wait for), so
        no ``timeout`` can make this loop spin.
        """
        # When the watchdog last found replies waiting unread, and on which connection.
        unread: tuple[BaseConnection | None, float] = (None, -float("inf"))
        while True:
            owed = [batch for batch in self._in_flight if not batch.request.complete]
            if not owed:
                await self._sent.wait()
                self._sent = trio.Event()
                continue
            oldest = min(owed, key=lambda batch: batch.sent_at)
            connection = oldest.connection
            heard = max(oldest.sent_at, connection.statistics.last_byte_received_at)
            if unread[0] is connection:
                heard = max(heard, unread[1])
            quiet_for = time.perf_counter() - heard
            if quiet_for < self.timeout:
                await trio.sleep(self.timeout - quiet_for)
            elif _unread(connection):
                # Redis has answered; this worker has not read it yet (a long
                # scheduling round under load is not Redis' silence).
                unread = (connection, time.perf_counter())
                await trio.lowlevel.checkpoint()
            else:
                self._drop(connection)
                await trio.lowlevel.checkpoint()

    def _drop(self, connection: BaseConnection) -> None:
        """Fail every call owed a reply on ``connection`` with RedisSilent, and drop it."""
        for batch in [batch for batch in self._in_flight if batch.connection is connection]:
            self._in_flight.remove(batch)
            for call in batch.calls:
                call.resolve(RedisSilent())
        connection.invalidate("redis sent nothing for a whole timeout")
        if self._connection is connection:
            self._connection = None
        self.on_silence()
