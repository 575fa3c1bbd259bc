from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import trio

from trio_counters import create_app
from trio_counters.config import STRATEGIES

from hypercorn_process import Server, run_hypercorn
from trio_counters.testing.redis import RedisServer

#: The strategies that must never lose an update.
SAFE_STRATEGIES = tuple(strategy for strategy in STRATEGIES if strategy != "naive")


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


@pytest.fixture(autouse=True)
def _redis_for_the_redis_strategy(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test run for the redis strategy (by fixture or by parametrize) gets an empty
    Redis, named in ``TRIO_COUNTERS_REDIS_URL`` like any setting: ``create_app`` and
    the hypercorn subprocesses find it there."""
    params = getattr(request.node, "callspec", None)
    if params and "redis" in (params.params.get("strategy"), params.params.get("safe_strategy")):
        monkeypatch.setenv("TRIO_COUNTERS_REDIS_URL", request.getfixturevalue("redis_url"))


@pytest.fixture(params=STRATEGIES)
def strategy(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=SAFE_STRATEGIES)
def safe_strategy(request: pytest.FixtureRequest) -> str:
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
async def server(strategy: str, nursery: trio.Nursery) -> Server:
    """The real ``hypercorn --worker-class trio trio_counters:app`` for each strategy."""
    return await nursery.start(
        lambda task_status: run_hypercorn(
            env={"TRIO_COUNTERS_STORE": strategy}, task_status=task_status
        )
    )
