"""The redis strategy: the table lives in Redis, shared by every worker and every server.

The in-process strategies are correct only inside one process: ``hypercorn -w 2``
gives two workers with two tables. Here the table is one Redis hash, and each
operation is **one atomic step on the Redis server** -- a short Lua script, which
Redis runs with nothing else in between -- so any number of workers on any number
of hosts count exactly:

- ``get``  ``HGET``; ``CounterNotFound`` when the field is missing.
- ``set``  ``HSET``, unless the name is new and the hash already holds
  ``max_counters`` fields (``TooManyCounters``); the check and the write are one step.
- ``inc``  ``HINCRBY`` by 1, only if the field exists (``CounterNotFound``, nothing
  created); Redis itself refuses to leave the signed 64-bit range
  (``CounterOverflow``, value unchanged) -- the same rule the HTTP API documents.
- ``i`` and ``j`` are created at 0 only if absent (``HSETNX`` semantics, within the
  limit), when the store first reaches Redis and again after it lost Redis: a
  restart of the server never resets a count.

Every script also returns ``HLEN``, so :meth:`RedisStore.statistics` (which must not
wait) reports the number of counters as of this worker's last answer from Redis.

**Client lifecycle.** One ``coredis`` client per store, entered in :meth:`serve`,
which the app runs in its own nursery for as long as it serves; requests never
open one. Leaving ``serve`` (``close()``, or the app's nursery cancelled) closes the
client and its connection, and answers whatever was still waiting with 503.

**One connection, one write per scheduling round.** Requests do not talk to the
connection themselves: they queue their script call, and a dispatcher task sends
everything queued as one pipelined batch (``create_request_batch``), then waits
for the replies, which Redis sends in order, and hands them out. (coredis'
per-command path, a request per call, takes one queued command per scheduling
round into its socket writer: under a few hundred concurrent requests nothing is
written for seconds, and a trio worker's round is long.) A request cancelled
before its batch leaves is dropped, so it never counts.

**Failures.** Automatic retries are off: an increment is not idempotent, and a
retry after a lost reply would count twice. Any Redis failure -- refused or lost
connection, a Redis still loading its data, silence -- is :class:`StoreUnavailable`
(HTTP 503) with the reason. For ``inc`` a 503 means the increment may or may not
have counted: it may have reached Redis before the reply was lost.

``redis_timeout`` bounds **Redis' silence**, not a request's wait: a request gets
503 once its connection has received nothing for that long since the request was
queued (Redis stalled, or a black-holed path -- a TCP connection to a host that
vanished can stay open for many minutes), and the connection is dropped, so the
next request connects afresh. A busy worker waits for Redis' replies in order,
bounded by the app's ``store_timeout`` like every strategy. Connecting
(TCP and handshake) is bounded by ``redis_timeout`` too.

**Startup and recovery.** ``serve`` tries Redis once before it reports ready. If
Redis is unreachable the server starts anyway and answers 503 until it is back; a
background task keeps trying every :data:`RECONNECT_INTERVAL` seconds and seeds
``i`` and ``j`` as soon as Redis answers. Requests reconnect by themselves.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import socket
import time
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import coredis
import trio
from anyio.abc import SocketAttribute
from coredis.commands.request import CommandRequest
from coredis.connection import BaseConnection
from coredis.exceptions import NoScriptError, RedisError
from coredis.retry import NoRetryPolicy

from ..errors import CounterNotFound, CounterOverflow, StoreUnavailable, TooManyCounters
from .base import CounterStore, StoreStatistics

__all__ = ["RedisStore", "HASH_KEY", "RECONNECT_INTERVAL", "redact"]

logger = logging.getLogger(__name__)

#: The Redis hash that holds every counter: field = name, value = decimal int64.
HASH_KEY = "trio_counters"
#: Seconds between attempts to reach Redis while it is unreachable (for seeding).
RECONNECT_INTERVAL = 0.5

# Each script: KEYS[1] is the hash. Each returns {HLEN, outcome, ...}. Values go in
# and out as strings: Lua numbers are doubles and would round int64 values.

_GET = """
local value = redis.call('HGET', KEYS[1], ARGV[1])
local n = redis.call('HLEN', KEYS[1])
if value then return {n, 'ok', value} end
return {n, 'missing'}
"""

# ARGV: name, value, max_counters
_SET = """
local n = redis.call('HLEN', KEYS[1])
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  if n >= tonumber(ARGV[3]) then return {n, 'full'} end
  n = n + 1
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {n, 'ok'}
"""

# HINCRBY refuses overflow itself ("increment or decrement would overflow") and
# then changes nothing; pcall turns that refusal into an answer.
_INC = """
local n = redis.call('HLEN', KEYS[1])
local value = redis.call('HGET', KEYS[1], ARGV[1])
if not value then return {n, 'missing'} end
local result = redis.pcall('HINCRBY', KEYS[1], ARGV[1], 1)
if type(result) == 'table' and result.err then return {n, 'refused', value, result.err} end
return {n, 'ok'}
"""

# ARGV: max_counters, then the names to create at 0 if absent.
# Returns {HLEN, names left out because the hash was full...}.
_SEED = """
local n = redis.call('HLEN', KEYS[1])
local limit = tonumber(ARGV[1])
local left_out = {}
for i = 2, #ARGV do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 0 then
    if n < limit then
      redis.call('HSET', KEYS[1], ARGV[i], '0')
      n = n + 1
    else
      table.insert(left_out, ARGV[i])
    end
  end
end
return {n, unpack(left_out)}
"""

_SCRIPTS = {"get": _GET, "set": _SET, "inc": _INC, "seed": _SEED}
_SHA = {name: hashlib.sha1(source.encode()).hexdigest() for name, source in _SCRIPTS.items()}


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``, fit for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


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


class _Silent(Exception):
    """Redis sent nothing for a whole ``redis_timeout``."""


@dataclasses.dataclass(eq=False)
class _Call:
    """One queued command and, once the dispatcher has it back, its reply."""

    command: CommandRequest[Any]
    queued_at: float = dataclasses.field(default_factory=time.perf_counter)
    #: The connection it went out on; None until its batch is sent.
    connection: BaseConnection | None = None
    #: Its requester has gone (cancelled or timed out): if not sent yet, never send it.
    abandoned: bool = False
    done: trio.Event = dataclasses.field(default_factory=trio.Event)
    #: The reply, or the exception to raise.
    result: Any = None

    def resolve(self, result: Any) -> None:
        if not self.done.is_set():
            self.result = result
            self.done.set()


class RedisStore(CounterStore):
    strategy = "redis"

    def __init__(
        self, *, url: str, max_counters: int, initial: Iterable[str] = (), timeout: float = 1.0
    ) -> None:
        self.url = url
        self.max_counters = max_counters
        self.timeout = timeout
        self._where = f"redis at {redact(url)}"
        self._not_serving = f"the redis store is not serving ({self._where})"
        self._initial = tuple(initial)
        # Set only while serve() runs.
        self._client: coredis.Redis[str] | None = None
        self._serving: trio.CancelScope | None = None
        self._closed = False
        # Calls waiting for the dispatcher, and the event that wakes it.
        self._queue: list[_Call] = []
        self._queued = trio.Event()
        # The one connection every batch goes out on (Redis answers in order).
        self._connection: BaseConnection | None = None
        # Set when a call fails: the background task then seeds i and j again
        # as soon as Redis answers (it may have come back without them).
        self._lost = trio.Event()
        # What statistics() reports: as of this worker's last answer from Redis.
        self._counters = 0
        self._connected = False
        self._unavailable = 0

    # -- lifecycle ---------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the client open while the app serves: dispatch calls, keep ``i`` and ``j`` seeded."""
        if self._closed:
            task_status.started()
            return
        client: coredis.Redis[str] = coredis.Redis.from_url(
            self.url,
            decode_responses=True,
            retry_policy=NoRetryPolicy(),  # never resend an increment whose reply was lost
            connect_timeout=self.timeout,
            # No per-reply timeout: _wait() times Redis' silence instead.
        )
        with trio.CancelScope() as self._serving:
            async with client:
                self._client = client
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._dispatch, client, nursery)
                        if not await self._seed():
                            logger.warning(
                                "%s is unreachable: serving anyway, answering 503 until it is back",
                                self._where,
                            )
                        task_status.started()
                        await self._keep_seeded()
                finally:
                    self._client = self._connection = None
                    self._connected = False
                    for call in self._queue:
                        call.resolve(StoreUnavailable(self._not_serving))
                    self._queue.clear()

    def close(self) -> None:
        # Calls after this get StoreUnavailable; the client closes with serve().
        self._closed = True
        self._client = None
        if self._serving is not None:
            self._serving.cancel()

    async def _keep_seeded(self) -> None:
        while True:
            await self._lost.wait()
            while True:
                self._lost = trio.Event()
                if await self._seed():
                    break
                await trio.sleep(RECONNECT_INTERVAL)
            logger.info("%s answers again", self._where)

    async def _seed(self) -> bool:
        """Create the initial counters at 0 where absent; whether Redis answered."""
        try:
            reply = await self._call("seed", [str(self.max_counters), *self._initial])
        except StoreUnavailable:
            return False
        if len(reply) > 1:
            logger.warning(
                "%s holds its limit of %d counters: did not create %s",
                self._where, self.max_counters, ", ".join(reply[1:]),
            )  # fmt: skip
        return True

    # -- the operations ----------------------------------------------------

    async def get(self, name: str) -> int:
        reply = await self._call("get", [name])
        if reply[1] == "missing":
            raise CounterNotFound(name)
        try:
            return int(reply[2])
        except ValueError:
            raise StoreUnavailable(f"{self._where} holds {reply[2]!r} for {name}, not an integer") from None

    async def set(self, name: str, value: int) -> None:
        reply = await self._call("set", [name, str(value), str(self.max_counters)])
        if reply[1] == "full":
            raise TooManyCounters(name, self.max_counters)

    async def inc(self, name: str) -> None:
        reply = await self._call("inc", [name])
        if reply[1] == "missing":
            raise CounterNotFound(name)
        if reply[1] == "refused":
            _, _, value, error = reply
            if "overflow" in error:
                raise CounterOverflow(name, int(value))
            raise StoreUnavailable(f"{self._where} refused to increment {name}: {error}")

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(
            strategy=self.strategy,
            counters=self._counters,
            max_counters=self.max_counters,
            guard={
                "redis": {
                    # Whether the last call reached Redis (False before the first).
                    "connected": self._connected,
                    # Calls answered StoreUnavailable (503) because of Redis.
                    "unavailable": self._unavailable,
                    # Calls queued for the dispatcher's next batch.
                    "queued": len(self._queue),
                }
            },
        )

    # -- one call, one atomic script --------------------------------------

    async def _call(self, script: str, args: Sequence[str]) -> list[Any]:
        """Run one script; every failure to get its answer is StoreUnavailable."""
        if self._client is None:
            await trio.lowlevel.checkpoint()
            raise StoreUnavailable(self._not_serving)
        keys_and_args = (1, HASH_KEY, *args)
        try:
            try:
                reply = await self._send(b"EVALSHA", _SHA[script], *keys_and_args)
            except NoScriptError:
                # Redis restarted (or its scripts were flushed). NOSCRIPT means the
                # script did not run, so sending its source now counts nothing twice.
                reply = await self._send(b"EVAL", _SCRIPTS[script], *keys_and_args)
        except (_Silent, TimeoutError):  # TimeoutError: coredis' own connect timeout
            raise self._unavailable_because(f"did not answer within {self.timeout:g} s") from None
        except RedisError as error:  # refused or lost connection, LOADING, READONLY, ...
            raise self._unavailable_because(f"failed: {error}") from None
        self._counters = int(reply[0])
        self._connected = True
        return list(reply)

    async def _send(self, *command: Any) -> Any:
        """Queue one command for the dispatcher; its reply, or raise its error."""
        call = _Call(CommandRequest(command[0], *command[1:], execution_parameters={"decode": True}))
        self._queue.append(call)
        self._queued.set()
        try:
            await self._wait(call)
        except BaseException:
            call.abandoned = True  # cancelled or silent: if it has not gone out, it never will
            raise
        if isinstance(call.result, BaseException):
            raise call.result
        return call.result

    async def _wait(self, call: _Call) -> None:
        """Wait for the reply as long as Redis keeps sending; _Silent once the
        connection has had nothing from Redis for ``redis_timeout`` since the call
        was queued."""
        heard = call.queued_at
        while True:
            connection = call.connection
            if connection is not None:
                heard = max(heard, connection.statistics.last_byte_received_at)
            remaining = heard + self.timeout - time.perf_counter()
            if remaining > 0:
                with trio.move_on_after(remaining):
                    await call.done.wait()
                    return
            elif connection is None:
                # Not sent yet: the dispatcher sends it or, if connecting takes
                # longer than redis_timeout, fails it.
                heard = time.perf_counter()
            elif _unread(connection):
                # Redis has answered; this worker has not read it yet (a long
                # scheduling round under load is not Redis' silence).
                heard = time.perf_counter()
            else:
                connection.invalidate("redis sent nothing for a whole redis_timeout")
                raise _Silent

    async def _dispatch(self, client: coredis.Redis[str], nursery: trio.Nursery) -> None:
        """Send what is queued as one batch, over and over; never raises for Redis."""
        while True:
            await self._queued.wait()
            self._queued = trio.Event()
            try:
                connection = await self._live_connection(client)
            except (_Silent, TimeoutError, RedisError) as error:
                calls, self._queue = self._queue, []
                for call in calls:
                    call.resolve(_Silent() if isinstance(error, _Silent) else error)
                continue
            calls, self._queue = [call for call in self._queue if not call.abandoned], []
            if not calls:
                continue
            for call in calls:
                call.connection = connection
            batch = connection.create_request_batch([call.command for call in calls])
            nursery.start_soon(self._deliver, batch, calls)

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
        raise _Silent

    async def _deliver(self, batch: Any, calls: list[_Call]) -> None:
        try:
            results = await batch  # in order; a lost connection fails the rest
        except BaseException:
            # Cancelled: the store is closing. Nobody waits forever.
            for call in calls:
                call.resolve(StoreUnavailable(self._not_serving))
            raise
        for call, result in zip(calls, results, strict=True):
            call.resolve(result)

    def _unavailable_because(self, reason: str) -> StoreUnavailable:
        self._connected = False
        self._unavailable += 1
        self._lost.set()
        return StoreUnavailable(f"{self._where} {reason}; try again")
