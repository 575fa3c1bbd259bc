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

**Client lifecycle.** Scripts go out through a :class:`.redis_pipeline.PipelinedRedis`
(one client, one connection, one pipelined write per scheduling round), open only
in :meth:`RedisStore.serve`, which the app runs in its own nursery for as long as it
serves; requests never open a client. Leaving ``serve`` (``close()``, or the app's
nursery cancelled) closes the client and answers whatever was still waiting with
503. A request cancelled before its call is sent never counts.

**Failures.** Automatic retries are off: an increment is not idempotent, and a
retry after a lost reply would count twice. Any Redis failure -- refused or lost
connection, a Redis still loading its data, silence -- is :class:`StoreUnavailable`
(HTTP 503) with the reason. For ``inc`` a 503 means the increment may or may not
have counted: it may have reached Redis before the reply was lost.

``redis_timeout`` bounds **Redis' silence** and connecting, not a request's wait
(:mod:`.redis_pipeline` says how): a busy worker waits for Redis' replies in order,
bounded by the app's ``store_timeout`` like every strategy.

**Startup and recovery.** ``serve`` tries Redis once before it reports ready. If
Redis is unreachable the server starts anyway and answers 503 until it is back; a
background task keeps trying every :data:`RECONNECT_INTERVAL` seconds and seeds
``i`` and ``j`` as soon as Redis answers. Requests reconnect by themselves.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import trio
from coredis.exceptions import NoScriptError, RedisError

from ..errors import CounterNotFound, CounterOverflow, StoreUnavailable, TooManyCounters
from .base import CounterStore, RedisGuardStatistics, StoreStatistics
from .redis_pipeline import PipelineClosed, PipelinedRedis, RedisSilent, redact

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
        self._redis = PipelinedRedis(url, timeout=timeout)
        # Set only while serve() runs.
        self._serving: trio.CancelScope | None = None
        self._closed = False
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
        with trio.CancelScope() as self._serving:
            try:
                async with self._redis.open():
                    if not await self._seed():
                        logger.warning(
                            "%s is unreachable: serving anyway, answering 503 until it is back",
                            self._where,
                        )
                    task_status.started()
                    await self._keep_seeded()
            finally:
                self._connected = False

    def close(self) -> None:
        # Calls after this get StoreUnavailable; the client closes with serve().
        self._closed = True
        self._redis.close()
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
            guard=RedisGuardStatistics(
                connected=self._connected, unavailable=self._unavailable, queued=self._redis.queued
            ),
        )

    # -- one call, one atomic script --------------------------------------

    async def _call(self, script: str, args: Sequence[str]) -> list[Any]:
        """Run one script; every failure to get its answer is StoreUnavailable."""
        keys_and_args = (1, HASH_KEY, *args)
        try:
            try:
                reply = await self._redis.execute(b"EVALSHA", _SHA[script], *keys_and_args)
            except NoScriptError:
                # Redis restarted (or its scripts were flushed). NOSCRIPT means the
                # script did not run, so sending its source now counts nothing twice.
                reply = await self._redis.execute(b"EVAL", _SCRIPTS[script], *keys_and_args)
        except PipelineClosed:  # not serving: not Redis' fault
            raise StoreUnavailable(self._not_serving) from None
        except (RedisSilent, TimeoutError):  # TimeoutError: coredis' own connect timeout
            raise self._unavailable_because(f"did not answer within {self.timeout:g} s") from None
        except RedisError as error:  # refused or lost connection, LOADING, READONLY, ...
            raise self._unavailable_because(f"failed: {error}") from None
        self._counters = int(reply[0])
        self._connected = True
        return list(reply)

    def _unavailable_because(self, reason: str) -> StoreUnavailable:
        self._connected = False
        self._unavailable += 1
        self._lost.set()
        return StoreUnavailable(f"{self._where} {reason}; try again")
