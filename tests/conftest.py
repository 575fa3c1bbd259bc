from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from trio_counters import create_app
from trio_counters.config import STRATEGIES

from hypercorn_process import Server, run_hypercorn

#: The strategies that must never lose an update.
SAFE_STRATEGIES = tuple(strategy for strategy in STRATEGIES if strategy != "naive")


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
