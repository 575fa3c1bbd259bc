"""The redis strategy beyond the shared behaviour suite: many workers, many servers, faults.

The shared suites (test_stores, test_app, test_observability, test_e2e) already run
over ``redis`` against the session's redis-server (see conftest.py). Here:

- settings; two stores on one Redis (two workers, in one process) count exactly and
  share one counter limit; a restarted server never resets a count;
- Redis unreachable when the server starts: 503 at once, then service and seeding
  by themselves once Redis is there;
- real hypercorn: ``-w 2`` plus a second server on another port, one Redis, exact
  totals on every ``/get``;
- Redis killed with ``kill -9`` mid-load and restarted (append-only file, fsync
  always): prompt 503s, recovery without action, no acknowledged increment lost,
  none counted twice;
- Redis stalled with SIGSTOP mid-load: 503 within ``redis_timeout``, nothing hangs,
  recovery on SIGCONT.

- Redis refusing the setup (a database it does not have, a password): 500, logged
  once as exactly that, never as "unreachable";
- the pipeline's watchdog: a stall is noticed and the connection dropped even when
  every caller gave up first, and no timeout can make it spin;
- the start: cancelling ``serve()`` while it first connects to a black-holed Redis
  ends it at once.

Every load loop is bounded in count and time and speaks only to 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import json
import time
from functools import partial

import pytest
import trio

from trio_counters import create_app
from trio_counters.config import DEFAULT_REDIS_URL, ConfigError, Settings
from trio_counters.errors import StoreMisconfigured, StoreUnavailable, TooManyCounters
from trio_counters.stores import RedisGuardStatistics, make_store
from trio_counters.stores.redis import RECONNECT_INTERVAL, RedisStore, redact
from trio_counters.stores.redis_pipeline import PipelinedRedis, RedisSilent
from trio_counters.testing import Connection, Server, request, run_server
from trio_counters.testing.redis import RedisServer, command, free_port

#: Bounds for a loaded 2-core machine; a pass never waits for them.
PROMPT = 5
#: The redis_timeout the fault tests run with.
FAULT_TIMEOUT = 0.5


# -- settings ----------------------------------------------------------------


def test_redis_settings_default_come_from_the_environment_and_are_checked() -> None:
    assert Settings.resolve(environ={}).redis_url == DEFAULT_REDIS_URL == "redis://127.0.0.1:6379/0"
    settings = Settings.resolve(
        environ={
            "TRIO_COUNTERS_STORE": "redis",
            "TRIO_COUNTERS_REDIS_URL": "redis://10.0.0.5:6380/2",
            "TRIO_COUNTERS_REDIS_TIMEOUT": "0.25",
        }
    )
    assert (settings.store, settings.redis_url, settings.redis_timeout) == (
        "redis", "redis://10.0.0.5:6380/2", 0.25
    )  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        Settings.resolve(environ={"TRIO_COUNTERS_REDIS_URL": "localhost:6379"})
    assert str(caught.value) == (
        "TRIO_COUNTERS_REDIS_URL (redis_url) must start with redis://, rediss:// or unix://, "
        "got 'localhost:6379'"
    )
    with pytest.raises(ConfigError) as caught:
        Settings.resolve(environ={"TRIO_COUNTERS_REDIS_TIMEOUT": "0"})
    assert str(caught.value) == (
        "TRIO_COUNTERS_REDIS_TIMEOUT (redis_timeout) must be a number of seconds from 0.01 to 30, got 0.0"
    )


def test_passwords_stay_out_of_messages() -> None:
    assert redact("redis://:hunter2@db:6379/0") == "redis://:***@db:6379/0"
    assert redact("redis://app:hunter2@db/1") == "redis://app:***@db/1"
    assert redact("redis://db:6379/0") == "redis://db:6379/0"


# -- stores on one Redis, in process ------------------------------------------


def _store(url: str, max_counters: int = 1000, timeout: float = 1.0) -> RedisStore:
    store = make_store(
        "redis", max_counters=max_counters, initial=("i", "j"), redis_url=url, redis_timeout=timeout
    )
    assert isinstance(store, RedisStore)
    return store


async def test_two_stores_on_one_redis_count_exactly_and_share_the_limit(redis_url: str) -> None:
    """Two stores are two workers: two clients, two connections, one table."""
    first, second = _store(redis_url, max_counters=10), _store(redis_url, max_counters=10)
    async with trio.open_nursery() as nursery:
        await nursery.start(first.serve)
        await nursery.start(second.serve)
        async with trio.open_nursery() as hammer:
            for _ in range(500):
                hammer.start_soon(first.inc, "i")
                hammer.start_soon(second.inc, "i")
        assert await first.get("i") == await second.get("i") == 1000

        # 40 new names at once from both, room for 8: the check-and-create is one
        # step on the server, so exactly 8 are created, whoever asked.
        created: list[str] = []
        refused: list[str] = []

        async def create(store: RedisStore, name: str) -> None:
            try:
                await store.set(name, 1)
                created.append(name)
            except TooManyCounters:
                refused.append(name)

        async with trio.open_nursery() as racers:
            for n in range(20):
                racers.start_soon(create, first, f"a{n}")
                racers.start_soon(create, second, f"b{n}")
        assert (len(created), len(refused)) == (8, 32)
        await first.get("i")
        assert first.statistics().counters == 10
        assert first.statistics().guard == RedisGuardStatistics(connected=True, unavailable=0, queued=0)
        first.close()
        second.close()
    # Closed: no longer connected; nothing was refused, nothing is left queued.
    assert first.statistics().guard == RedisGuardStatistics(connected=False, unavailable=0, queued=0)


async def test_a_restarted_server_never_resets_a_count(redis_url: str) -> None:
    for expected in (3, 6):
        store = _store(redis_url)
        async with trio.open_nursery() as nursery:
            await nursery.start(store.serve)  # seeds i and j only where absent
            assert await store.get("i") == expected - 3
            for _ in range(3):
                await store.inc("i")
            store.close()
    assert await _value_after_restart(redis_url) == 6


async def _value_after_restart(url: str) -> int:
    store = _store(url)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.serve)
        value = await store.get("i")
        store.close()
    return value


async def test_calls_after_close_are_unavailable(redis_url: str) -> None:
    app = create_app(store="redis", redis_url=redis_url)
    async with app.test_app():
        client = app.test_client()
        assert (await client.get("/inc?name=i")).status_code == 200
    with trio.fail_after(PROMPT):
        response = await client.get("/inc?name=i")
    assert response.status_code == 503
    assert await response.get_data(as_text=True) == (
        f"the redis store is not serving (redis at {redis_url})\n"
    )


async def test_unreachable_at_start_answers_503_then_serves_and_seeds_by_itself() -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    app = create_app(store="redis", redis_url=url)
    with trio.fail_after(PROMPT):
        async with app.test_app():  # starts although Redis is not there
            client = app.test_client()
            start = trio.current_time()
            response = await client.get("/inc?name=i")
            assert trio.current_time() - start < 1  # refused connection: no waiting
            assert response.status_code == 503
            assert response.headers["Retry-After"] == "1"
            body = await response.get_data(as_text=True)
            assert body.startswith(f"redis at {url} failed: ") and body.endswith("; try again\n")
            stats = json.loads(await (await client.get("/stats")).get_data(as_text=True))
            assert stats["redis"]["connected"] is False
            # Requests answered 503, not the background task's attempts to reach Redis.
            assert stats["redis"]["unavailable"] == 1
            await trio.sleep(RECONNECT_INTERVAL * 2.5)  # two more background attempts
            stats = json.loads(await (await client.get("/stats")).get_data(as_text=True))
            assert stats["redis"]["unavailable"] == 1

            redis = RedisServer(port=port)
            try:
                await trio.to_thread.run_sync(redis.start)
                # No request needed: the store's own task seeds i and j once Redis answers.
                while (response := await client.get("/get?name=i")).status_code != 200:
                    await trio.sleep(RECONNECT_INTERVAL / 5)
                assert await response.get_data(as_text=True) == "i: 0\n"
                assert (await client.get("/inc?name=i")).status_code == 200
                stats = json.loads(await (await client.get("/stats")).get_data(as_text=True))
                assert stats["redis"]["connected"] is True
                assert stats["counters"] == 2
            finally:
                redis.stop()


# -- real servers -------------------------------------------------------------


async def _start_server(nursery: trio.Nursery, url: str, *args: str, **env: str) -> Server:
    environment = {"TRIO_COUNTERS_STORE": "redis", "TRIO_COUNTERS_REDIS_URL": url, **env}
    return await nursery.start(partial(run_server, env=environment, args=args))


async def _value(port: int) -> int:
    reply = await request(port, "/get?name=i")
    assert reply.status == 200, reply
    return int(reply.body.split(": ")[1])


async def test_two_workers_and_a_second_server_share_one_redis_exactly(
    redis_url: str, nursery: trio.Nursery
) -> None:
    """``-w 2`` on one port, another server on another: one table, exact on every /get.
    (With an in-process strategy each worker would count only its own share.)"""
    async with trio.open_nursery() as starting:
        servers: list[Server] = []

        async def start(*args: str) -> None:
            servers.append(await _start_server(nursery, redis_url, *args))

        starting.start_soon(start, "-w", "2")
        starting.start_soon(start)
    ports = [server.port for server in servers]
    assert len(set(ports)) == 2
    acknowledged = 0

    async def one_client(port: int) -> None:
        nonlocal acknowledged
        async with await Connection.open(port) as connection:
            for _ in range(10):
                reply = await connection.request("/inc?name=i")
                assert reply.status == 200, reply
                acknowledged += 1

    with trio.fail_after(60):
        async with trio.open_nursery() as hammer:
            for n in range(200):
                hammer.start_soon(one_client, ports[n % 2])
    assert acknowledged == 2000
    # A new connection per /get: the kernel hands them to either worker.
    values = [await _value(port) for port in ports for _ in range(10)]
    assert values == [2000] * 20


@dataclasses.dataclass
class Load:
    """Keep-alive clients incrementing ``i`` until told to stop; what came back."""

    port: int
    ok: int = 0
    unavailable: int = 0
    slowest_503: float = 0.0
    slowest: float = 0.0
    stopping: bool = False

    async def client(self) -> None:
        async with await Connection.open(self.port) as connection:
            while not self.stopping:  # finish the request in flight, then stop
                start = time.monotonic()
                reply = await connection.request("/inc?name=i")
                took = time.monotonic() - start
                self.slowest = max(self.slowest, took)
                if reply.status == 200:
                    self.ok += 1
                else:
                    assert reply.status == 503, reply
                    assert reply.body.startswith("redis at "), reply
                    self.unavailable += 1
                    self.slowest_503 = max(self.slowest_503, took)
                await trio.sleep(0.001)  # a bounded rate: ~1,000 requests/s per client at most

    async def until(self, condition: object) -> None:
        while not condition():  # type: ignore[operator]
            await trio.sleep(0.01)


async def _under_load(server: Server, fault: object, clients: int = 20) -> Load:
    """Run the load, inject ``fault`` (an async callable given the load) once 200
    increments are acknowledged, stop after 200 more; the load's record."""
    load = Load(server.port)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for _ in range(clients):
                nursery.start_soon(load.client)
            await load.until(lambda: load.ok >= 200)
            await fault(load)  # type: ignore[operator]
            recovered = load.ok
            await load.until(lambda: load.ok >= recovered + 200)
            load.stopping = True
    return load


async def test_redis_killed_and_restarted_mid_load_loses_no_acknowledged_increment(
    nursery: trio.Nursery,
) -> None:
    with RedisServer(durable=True) as redis:  # appendonly yes, appendfsync always
        server = await _start_server(
            nursery, redis.url(), TRIO_COUNTERS_REDIS_TIMEOUT=str(FAULT_TIMEOUT)
        )

        async def kill_and_restart(load: Load) -> None:
            await trio.to_thread.run_sync(redis.kill)  # kill -9: no shutdown, no final save
            seen = load.unavailable
            await load.until(lambda: load.unavailable >= seen + 50)  # answered, not hung
            await trio.to_thread.run_sync(redis.start)  # same port, same append-only file

        load = await _under_load(server, kill_and_restart)
        final = await _value(server.port)
    assert load.unavailable >= 50
    assert load.slowest_503 < FAULT_TIMEOUT + 1  # refused connections: prompt
    # Every acknowledged increment survived kill -9; a 503 may or may not have counted
    # (it may have reached Redis before the connection died), and none counted twice.
    assert load.ok <= final <= load.ok + load.unavailable
    assert "Traceback" not in server.log, server.log


async def test_redis_stalled_mid_load_gets_503_within_the_timeout_then_recovers(
    nursery: trio.Nursery,
) -> None:
    with RedisServer() as redis:
        server = await _start_server(
            nursery, redis.url(), TRIO_COUNTERS_REDIS_TIMEOUT=str(FAULT_TIMEOUT)
        )

        async def stall(load: Load) -> None:
            redis.pause()  # SIGSTOP: connections are accepted, nothing answers
            try:
                seen = load.unavailable
                await load.until(lambda: load.unavailable >= seen + 20)
                await trio.sleep(FAULT_TIMEOUT * 2)
            finally:
                redis.resume()

        load = await _under_load(server, stall)
        final = await _value(server.port)
    assert load.unavailable >= 20
    # Nothing waited much past redis_timeout (the server's own store_timeout is 10 s).
    assert load.slowest < FAULT_TIMEOUT + 1.5, load
    # Stalled increments were in Redis' socket buffers: they may count after SIGCONT.
    assert load.ok <= final <= load.ok + load.unavailable
    assert "Traceback" not in server.log, server.log


async def test_requests_during_shutdown_of_the_store_are_unavailable_not_errors(redis_url: str) -> None:
    store = _store(redis_url)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.serve)
        store.close()
    with pytest.raises(StoreUnavailable, match="not serving"):
        await store.inc("i")


# -- Redis refusing the setup ---------------------------------------------------


def _logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "trio_counters.stores.redis"]


async def test_a_database_redis_does_not_have_is_reported_as_exactly_that(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The URL's database is checked at start only for its form: how many a Redis has
    is its own configuration (16 by default), so Redis' refusal is what is reported."""
    url = redis_server.url(99)
    app = create_app(store="redis", redis_url=url)
    with trio.fail_after(PROMPT):
        async with app.test_app():
            client = app.test_client()
            for path in ("/get?name=i", "/inc?name=i", "/set?name=x&val=1"):
                response = await client.get(path)
                assert response.status_code == 500, path
                assert "Retry-After" not in response.headers  # retrying will not help
                assert await response.get_data(as_text=True) == (
                    f"redis at {url} refused the connection: DB index is out of range\n"
                )
            await trio.sleep(RECONNECT_INTERVAL * 1.5)  # the background task checks again
            stats = json.loads(await (await client.get("/stats")).get_data(as_text=True))
    assert (stats["redis"]["connected"], stats["redis"]["unavailable"]) == (False, 0)
    # Logged once, at start, and never as "unreachable".
    assert _logged(caplog) == [
        f"redis at {url} refused the connection: DB index is out of range; "
        "answering 500 until that is fixed"
    ]


async def test_a_password_redis_refuses_is_reported_as_such_and_kept_out_of_messages() -> None:
    with RedisServer() as redis:
        command(redis.port, "CONFIG", "SET", "requirepass", "secret")
        url = f"redis://:wrong@127.0.0.1:{redis.port}/0"
        store = _store(url)
        async with trio.open_nursery() as nursery:
            await nursery.start(store.serve)
            with pytest.raises(StoreMisconfigured) as caught:
                await store.inc("i")
            store.close()
    assert str(caught.value) == (
        f"redis at redis://:***@127.0.0.1:{redis.port}/0 refused the connection: "
        "invalid username-password pair or user is disabled."
    )


# -- the pipeline's watchdog ------------------------------------------------------


async def test_a_stall_is_noticed_even_when_every_caller_gives_up_first() -> None:
    """Each caller here gives up long before redis_timeout, as a request past its
    store_timeout or a client that hung up does. The stall must still be noticed and
    the connection dropped (it used to stay, connected: true, with every later batch
    piling up on it), and service must resume by itself."""
    with RedisServer() as redis:
        store = _store(redis.url(), timeout=0.3)
        async with trio.open_nursery() as nursery:
            await nursery.start(store.serve)
            await store.inc("i")
            assert store.statistics().guard == RedisGuardStatistics(connected=True, unavailable=0, queued=0)
            redis.pause()
            try:

                async def give_up_soon() -> None:
                    with trio.move_on_after(0.05):
                        await store.inc("i")

                async with trio.open_nursery() as callers:
                    for _ in range(20):
                        callers.start_soon(give_up_soon)
                with trio.fail_after(PROMPT):
                    while store.statistics().guard.connected:
                        await trio.sleep(0.01)
                # Nobody was answered 503 by the store, and nothing piles up: at most
                # the background task's probe waits for a new connection.
                guard = store.statistics().guard
                assert (guard.connected, guard.unavailable) == (False, 0)
                assert guard.queued <= 1
            finally:
                redis.resume()
            with trio.fail_after(PROMPT):  # the background task reconnects by itself
                while not store.statistics().guard.connected:
                    await trio.sleep(0.05)
            assert await store.get("i") >= 1
            store.close()


async def test_no_timeout_can_make_the_pipeline_spin(redis_url: str) -> None:
    """redis_pipeline's old _wait() looped without an await once the timeout was
    shorter than one scheduling round (redis_timeout=1e-6: 100 % CPU, no answer).
    The settings now refuse such a timeout; the pipeline's own loops await on every
    pass anyway, so even 1e-6 s only makes calls fail fast."""
    pipeline = PipelinedRedis(redis_url, timeout=PROMPT)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.sleep(0.001)

    async with pipeline.open():
        assert await pipeline.execute(b"PING") == "PONG"  # connected with a sane timeout
        pipeline.timeout = 1e-6  # below any setting: the watchdog alone is on trial
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            with trio.fail_after(PROMPT):
                for _ in range(20):
                    try:
                        assert await pipeline.execute(b"PING") == "PONG"
                    except RedisSilent:
                        pass
                    await trio.sleep(0.002)
            nursery.cancel_scope.cancel()
    assert ticks >= 10  # the rest of the worker kept running throughout


# -- the start ------------------------------------------------------------------


@pytest.mark.parametrize("stop", ["cancelled", "closed"])
async def test_serve_stops_at_once_while_it_first_connects_to_a_black_holed_redis(stop: str) -> None:
    """A listener that never answers: the kernel completes the TCP handshake, Redis'
    never comes. serve() shields nothing, so it ends at once, not after redis_timeout.

    (Under hypercorn a SIGTERM in that window still waits for the start: hypercorn's
    trio worker begins to watch for shutdown only after the lifespan startup has
    completed and it has logged "Running on" -- worker_serve() in hypercorn/trio/run.py.
    serve() bounds that start by one redis_timeout, at most 30 s.)"""
    with trio.socket.socket() as listener:
        await listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        store = _store(f"redis://127.0.0.1:{listener.getsockname()[1]}/0", timeout=20)
        start = trio.current_time()
        with trio.fail_after(PROMPT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(store.serve)
                await trio.sleep(0.2)  # well into the first connect
                if stop == "cancelled":
                    nursery.cancel_scope.cancel()
                else:
                    store.close()
        assert trio.current_time() - start < 2
    assert store.statistics().guard.connected is False
