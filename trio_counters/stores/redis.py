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
  created) and holds an API value (below); Redis itself refuses to leave the signed
  64-bit range (``CounterOverflow``, value unchanged) -- the same rule the HTTP API
  documents.
- ``i`` and ``j`` are created at 0 only if absent (``HSETNX`` semantics, within the
  limit), when the store first reaches Redis and again after it lost Redis: a
  restart of the server never resets a count.

Every script also returns ``HLEN``, so :meth:`RedisStore.statistics` (which must not
wait) reports the number of counters as of this worker's last answer from Redis.

**Data written by something else.** A value follows the API's integer rule: a
signed 64-bit integer in canonical form (ASCII digits, ``-`` as the only sign, no
leading zeros), exactly what ``set`` writes, so what ``get`` shows is what ``/set``
would store. Any other value (``05``, ``1_000``, ``٣``, past int64) is
:class:`CounterCorrupt` for ``get`` and ``inc`` -- ``inc``'s script checks it
before ``HINCRBY``, which would take some of them -- and ``set`` replaces it. A key
``trio_counters`` that is not a hash is :class:`StoreMisconfigured` (WRONGTYPE),
logged, like a database Redis does not have or credentials it refuses.

The scripts themselves are in :mod:`.redis_scripts`.

**Client lifecycle.** Scripts go out through a :class:`.redis_pipeline.PipelinedRedis`
(one client, one connection, one pipelined write per scheduling round), open only
in :meth:`RedisStore.serve`, which the app runs in its own nursery for as long as it
serves; requests never open a client. Leaving ``serve`` (``close()``, or the app's
nursery cancelled) closes the client and answers whatever was still waiting with
503. A request cancelled before its call is sent never counts. Nothing in ``serve``
is shielded: cancelling it, even while it first connects, ends it at once.

**Failures.** Automatic retries are off: an increment is not idempotent, and a
retry after a lost reply would count twice. Any Redis failure -- refused or lost
connection, a Redis still loading its data, silence -- is :class:`StoreUnavailable`
(HTTP 503) with the reason. For ``inc`` a 503 means the increment may or may not
have counted: it may have reached Redis before the reply was lost.

``redis_timeout`` bounds **Redis' silence** and connecting, not a request's wait
(:mod:`.redis_pipeline` says how; its watchdog notices a stall even when no request
waits that long): a busy worker waits for Redis' replies in order, bounded by the
app's ``store_timeout`` like every strategy. The settings refuse a
``redis_timeout`` that is not below ``store_timeout``, so that a request in a stall
hears why.

**Startup and recovery.** ``serve`` tries Redis once, for at most ``redis_timeout``,
before it reports ready. If Redis cannot be used the server starts anyway, logs why
and answers 503 (or 500 when Redis refuses the setup) until it can; a background
task keeps trying every :data:`RECONNECT_INTERVAL` seconds and seeds ``i`` and ``j``
as soon as Redis answers. Requests reconnect by themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import trio
from coredis.exceptions import AuthenticationError, AuthorizationError, NoScriptError, RedisError

from ..errors import (
    CounterCorrupt,
    CounterNotFound,
    CounterOverflow,
    StoreMisconfigured,
    StoreUnavailable,
    TooManyCounters,
)
from .base import CounterStore, RedisGuardStatistics, StoreStatistics
from .redis_pipeline import PipelineClosed, PipelinedRedis, RedisSilent, redact
from .redis_scripts import SCRIPTS, SHA, canonical

__all__ = ["RedisStore", "HASH_KEY", "RECONNECT_INTERVAL", "redact"]

logger = logging.getLogger(__name__)

#: The Redis hash that holds every counter: field = name, value = decimal int64.
HASH_KEY = "trio_counters"
#: Seconds between attempts to reach Redis while it is unreachable (for seeding).
RECONNECT_INTERVAL = 0.5


def _refuses_setup(error: RedisError) -> bool:
    """Whether Redis refused the connection's setup (database, credentials), for good."""
    return isinstance(error, (AuthenticationError, AuthorizationError)) or (
        "DB index is out of range" in str(error)
    )


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
        self._redis = PipelinedRedis(url, timeout=timeout, on_silence=self._link_lost)
        # Set only while serve() runs.
        self._serving: trio.CancelScope | None = None
        self._closed = False
        # Set when a call fails: the background task then seeds i and j again
        # as soon as Redis answers (it may have come back without them).
        self._lost = trio.Event()
        # The misconfiguration last logged, so that each is logged once.
        self._logged_problem: str | None = None
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
                    seeded = False
                    # One redis_timeout in all, connecting included: hypercorn waits
                    # for this start before it heeds a SIGTERM.
                    with trio.move_on_after(self.timeout):
                        seeded = await self._seed()
                    if not seeded:
                        self._lost.set()
                        if self._logged_problem is None:  # else it is logged already
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
        """Create the initial counters at 0 where absent; whether Redis answered.

        Not a request: a failure here is not counted in ``statistics().unavailable``.
        """
        try:
            reply = await self._run("seed", [str(self.max_counters), *self._initial])
        except (StoreUnavailable, StoreMisconfigured):
            return False
        if len(reply) > 1:
            logger.warning(
                "%s holds its limit of %d counters: did not create %s",
                self._where, self.max_counters, ", ".join(reply[1:]),
            )  # fmt: skip
        return True

    def _link_lost(self) -> None:
        """The pipeline dropped a silent connection, whether or not anyone still waited."""
        self._connected = False
        self._lost.set()

    # -- the operations ----------------------------------------------------

    async def get(self, name: str) -> int:
        reply = await self._call("get", [name])
        if reply[1] == "missing":
            raise CounterNotFound(name)
        value = canonical(reply[2])
        if value is None:
            raise CounterCorrupt(name, reply[2])
        return value

    async def set(self, name: str, value: int) -> None:
        reply = await self._call("set", [name, str(value), str(self.max_counters)])
        if reply[1] == "full":
            raise TooManyCounters(name, self.max_counters)

    async def inc(self, name: str) -> None:
        reply = await self._call("inc", [name])
        if reply[1] == "missing":
            raise CounterNotFound(name)
        if reply[1] == "corrupt":
            raise CounterCorrupt(name, reply[2])
        if reply[1] == "refused":
            _, _, value, error = reply
            if "overflow" in error:
                raise CounterOverflow(name, int(value))
            self._unavailable += 1
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
        """Run one script for a request; a 503 counts in ``statistics().unavailable``."""
        try:
            return await self._run(script, args)
        except StoreUnavailable:
            self._unavailable += 1
            raise

    async def _run(self, script: str, args: Sequence[str]) -> list[Any]:
        """Run one script; StoreUnavailable when its answer cannot be had, and
        StoreMisconfigured when Redis refuses how the store is set up."""
        keys_and_args = (1, HASH_KEY, *args)
        try:
            try:
                reply = await self._redis.execute(b"EVALSHA", SHA[script], *keys_and_args)
            except NoScriptError:
                # Redis restarted (or its scripts were flushed). NOSCRIPT means the
                # script did not run, so sending its source now counts nothing twice.
                reply = await self._redis.execute(b"EVAL", SCRIPTS[script], *keys_and_args)
        except PipelineClosed:  # not serving: not Redis' fault
            raise StoreUnavailable(self._not_serving) from None
        except (RedisSilent, TimeoutError):  # TimeoutError: coredis' own connect timeout
            raise self._unavailable_because(f"did not answer within {self.timeout:g} s") from None
        except RedisError as error:  # refused or lost connection, LOADING, READONLY, ...
            if _refuses_setup(error):
                self._connected = False
                raise self._misconfigured(f"refused the connection: {error}") from None
            raise self._unavailable_because(f"failed: {error}") from None
        self._connected = True
        if reply[0] == -1:  # the key is not a hash
            raise self._misconfigured(
                f"holds a {reply[2]} at key {HASH_KEY!r}, not the hash of counters "
                "(WRONGTYPE): delete or rename that key"
            )
        self._counters = int(reply[0])
        self._logged_problem = None
        return list(reply)

    def _unavailable_because(self, reason: str) -> StoreUnavailable:
        self._connected = False
        self._lost.set()
        return StoreUnavailable(f"{self._where} {reason}; try again")

    def _misconfigured(self, reason: str) -> StoreMisconfigured:
        """Redis refuses the setup: logged once (until it works again), never retried
        by the request, but the background task keeps checking whether it was fixed."""
        self._lost.set()
        if reason != self._logged_problem:
            self._logged_problem = reason
            logger.error("%s %s; answering 500 until that is fixed", self._where, reason)
        return StoreMisconfigured(f"{self._where} {reason}")
