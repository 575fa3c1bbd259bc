from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from functools import partial

import pytest
import trio
from hypothesis import HealthCheck, settings

from trio_counters import create_app
from trio_counters.config import SAFE_STRATEGIES, SHARED_STRATEGIES, STRATEGIES
from trio_counters.testing import Server, run_server
from trio_counters.testing.redis import RedisServer

# Every property and fuzz test here: no per-example deadline (an example starts a store
# or an app), and function-scoped fixtures are fine to share between examples, since
# `strategy` and `safe_strategy` are immutable names and `wipe` a function each example
# calls.
settings.register_profile(
    "trio_counters",
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile("trio_counters")

#: What a test's server may be started with: a strategy, hypercorn's flags, settings.
StartServer = Callable[..., Awaitable[Server]]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server (no persistence) for the whole session, started on first use."""
    try:
        server = RedisServer()
    except RuntimeError as error:  # no binary: fail, never skip
        pytest.fail(str(error), pytrace=False)
    with server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied for this test."""
    redis_server.flush()
    return redis_server.url()


def _chosen_strategy(request: pytest.FixtureRequest) -> str | None:
    """The strategy a test runs for, by fixture or by parametrize."""
    params = getattr(request.node, "callspec", None)
    return params and (params.params.get("strategy") or params.params.get("safe_strategy"))


@pytest.fixture(autouse=True)
def _redis_for_the_redis_strategy(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test run for the redis strategy (by fixture or by parametrize) gets an empty
    Redis, named in ``TRIO_COUNTERS_REDIS_URL`` like any setting: ``create_app`` and
    the hypercorn subprocesses find it there."""
    if _chosen_strategy(request) == "redis":
        monkeypatch.setenv("TRIO_COUNTERS_REDIS_URL", request.getfixturevalue("redis_url"))


@pytest.fixture
def wipe(request: pytest.FixtureRequest) -> Callable[[], None]:
    """Empty whatever outlives a store, before each hypothesis example.

    In-process stores start empty; a shared store (``redis``) keeps its table in the
    session's Redis, which is emptied once per *test*, so each *example* empties it
    again with this.
    """
    if _chosen_strategy(request) in SHARED_STRATEGIES:
        return request.getfixturevalue("redis_server").flush  # type: ignore[no-any-return]
    return lambda: None


@pytest.fixture(params=STRATEGIES)
def strategy(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=SAFE_STRATEGIES)
def safe_strategy(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=("stock", "fast"))
def transport_kind(request: pytest.FixtureRequest) -> str:
    """hypercorn's own trio transport, or trio_counters' fast one (``TRIO_COUNTERS_TRANSPORT``)."""
    return request.param


@pytest.fixture
async def app(strategy: str) -> AsyncIterator[object]:
    """A serving app (lifespan run, so the channel manager is up) for each strategy."""
    app = create_app(store=strategy)
    async with app.test_app():
        yield app


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    return app.test_client()


@pytest.fixture
async def start_server(nursery: trio.Nursery) -> AsyncIterator[StartServer]:
    """Start the real ``hypercorn --worker-class trio trio_counters:app`` for this test::

        server = await start_server("lock", "--keep-alive", "2", env={...})

    The strategy goes to ``TRIO_COUNTERS_STORE`` (None: the default), the other
    arguments to hypercorn, ``env`` to the server's environment. Each server stops
    with the test; one that logged a traceback shows its log when the test fails.
    """
    started: list[Server] = []

    async def start(strategy: str | None = None, *args: str, env: Mapping[str, str] = {}) -> Server:
        environment = {**env, **({"TRIO_COUNTERS_STORE": strategy} if strategy else {})}
        server: Server = await nursery.start(partial(run_server, env=environment, args=args))
        started.append(server)
        return server

    yield start
    for server in started:
        if server.tracebacks():
            print(f"--- hypercorn's log, port {server.port} ---\n{server.log[-8000:]}")


@pytest.fixture
async def server(strategy: str, start_server: StartServer) -> Server:
    """The real ``hypercorn --worker-class trio trio_counters:app`` for each strategy."""
    return await start_server(strategy)
