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
which the app runs in its own nursery for as long as it serves; requests only use
it. Leaving ``serve`` (``close()``, or the app's nursery cancelled) closes the
client and every connection in it.

**Failures.** Automatic retries are off: ``INCR`` is not idempotent, and a retry
after a lost reply would count twice. Any Redis failure -- refused connection,
lost connection, no answer within ``redis_timeout``, a Redis that is still loading
its data -- is :class:`StoreUnavailable` (HTTP 503) at once, with the reason. For
``inc`` a 503 means the increment may or may not have counted: the request may
have reached Redis before the reply was lost. A connection that stays silent for
a whole ``redis_timeout`` is dropped (at most once per ``redis_timeout``), so a
black-holed TCP connection cannot make every later request wait too.

**Startup and recovery.** ``serve`` tries Redis once (within ``redis_timeout``)
before it reports ready. If Redis is unreachable the server starts anyway and
answers 503 until it is back; a background task keeps trying every
:data:`RECONNECT_INTERVAL` seconds and seeds ``i`` and ``j`` as soon as Redis
answers. Requests reconnect by themselves: nothing needs a restart.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import coredis
import trio
from coredis.commands.script import Script
from coredis.exceptions import RedisError
from coredis.retry import NoRetryPolicy

from ..errors import CounterNotFound, CounterOverflow, StoreUnavailable, TooManyCounters
from .base import CounterStore, StoreStatistics

__all__ = ["RedisStore", "HASH_KEY", "RECONNECT_INTERVAL"]

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


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``, fit for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


class RedisStore(CounterStore):
    strategy = "redis"

    def __init__(
        self, *, url: str, max_counters: int, initial: Iterable[str] = (), timeout: float = 1.0
    ) -> None:
        self.url = url
        self.max_counters = max_counters
        self.timeout = timeout
        self._where = f"redis at {redact(url)}"
        self._initial = tuple(initial)
        # Set only while serve() runs: requests use the client, never open one.
        self._client: coredis.Redis[str] | None = None
        self._scripts: dict[str, Script[str]] = {}
        self._serving: trio.CancelScope | None = None
        self._closed = False
        # Set when a call fails: the background task then seeds i and j again
        # as soon as Redis answers (it may have come back without them).
        self._lost = trio.Event()
        self._last_reset = -math.inf
        # What statistics() reports: as of this worker's last answer from Redis.
        self._counters = 0
        self._connected = False
        self._unavailable = 0

    # -- lifecycle ---------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the client open while the app serves; keep ``i`` and ``j`` seeded."""
        if self._closed:
            task_status.started()
            return
        client: coredis.Redis[str] = coredis.Redis.from_url(
            self.url,
            decode_responses=True,
            retry_policy=NoRetryPolicy(),  # never resend an INCR whose reply was lost
            stream_timeout=self.timeout,
            connect_timeout=self.timeout,
        )
        with trio.CancelScope() as self._serving:
            async with client:
                self._scripts = {
                    name: client.register_script(text)
                    for name, text in (("get", _GET), ("set", _SET), ("inc", _INC), ("seed", _SEED))
                }
                self._client = client
                try:
                    if not await self._seed():
                        logger.warning(
                            "%s is unreachable: serving anyway, answering 503 until it is back",
                            self._where,
                        )
                    task_status.started()
                    await self._keep_seeded()
                finally:
                    self._client = None
                    self._connected = False

    def close(self) -> None:
        # Requests after this get StoreUnavailable; the client closes with serve().
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
            logger.info("%s answers; %s present", self._where, " and ".join(self._initial) or "nothing to seed")

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
                }
            },
        )

    # -- one call, one atomic script --------------------------------------

    async def _call(self, script: str, args: Sequence[str]) -> list[Any]:
        """Run one script; every failure to get its answer is StoreUnavailable."""
        client = self._client
        if client is None:
            await trio.lowlevel.checkpoint()
            raise StoreUnavailable(f"the redis store is not serving ({self._where})")
        try:
            with trio.move_on_after(self.timeout) as deadline:
                reply = await self._scripts[script].execute(keys=[HASH_KEY], args=args)
        except TimeoutError:  # coredis' own reply or connect timeout
            self._reset_silent_connections(client)
            raise self._unavailable_because(f"did not answer within {self.timeout:g} s") from None
        except RedisError as error:  # refused or lost connection, LOADING, READONLY, ...
            raise self._unavailable_because(f"failed: {error}") from None
        except RuntimeError:
            if self._client is client:
                raise
            # The store closed while this call was starting: the pool has gone.
            raise StoreUnavailable(f"the redis store is not serving ({self._where})") from None
        if deadline.cancelled_caught:
            self._reset_silent_connections(client)
            raise self._unavailable_because(f"did not answer within {self.timeout:g} s")
        self._counters = int(reply[0])
        self._connected = True
        return list(reply)

    def _unavailable_because(self, reason: str) -> StoreUnavailable:
        self._connected = False
        self._unavailable += 1
        self._lost.set()
        return StoreUnavailable(f"{self._where} {reason}; try again")

    def _reset_silent_connections(self, client: coredis.Redis[str]) -> None:
        """Drop the pool's connections after a timeout, at most once per timeout.

        A stalled Redis keeps its connections open; so does a black-holed network
        path, forever. New connections find out which it is.
        """
        now = trio.current_time()
        if now - self._last_reset >= self.timeout:
            self._last_reset = now
            client.connection_pool.disconnect()
