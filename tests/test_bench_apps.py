"""The reference apps the benchmarks serve: bare_asgi's two counters, and the
``benchmarks.reference:served(...)`` module path hypercorn loads them by."""

from __future__ import annotations

import pytest
import trio

from benchmarks import bare_asgi
from benchmarks.strategies import ROOT
from trio_counters.testing import request, serving


async def _call_asgi(app, query: str, path: str = "/inc") -> tuple[int, str]:  # type: ignore[no-untyped-def]
    """One GET through a bare ASGI app, in process; (status, body)."""
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "query_string": query.encode()}
    await app(scope, receive, send)
    return int(sent[0]["status"]), bytes(sent[1]["body"]).decode()  # type: ignore[call-overload]


@pytest.mark.parametrize("entry", ["app", "unguarded_app"])
async def test_bare_apps_count_every_concurrent_increment_and_refuse_bad_input(entry: str) -> None:
    app = getattr(bare_asgi, entry)
    assert await _call_asgi(app, "name=k&val=0", "/set") == (200, "ok\n")
    async with trio.open_nursery() as nursery:
        for _ in range(200):
            nursery.start_soon(_call_asgi, app, "name=k")
    assert await _call_asgi(app, "name=k", "/get") == (200, "k: 200\n")
    assert (await _call_asgi(app, "name=missing"))[0] == 404
    assert (await _call_asgi(app, "name=k&val=x", "/set"))[0] == 400
    assert await _call_asgi(app, "name=k", "/get") == (200, "k: 200\n")  # refusals changed nothing


@pytest.mark.parametrize(
    ("name", "transport"), [("plain", "stock"), ("bare", "fast"), ("bare+lock", "stock")]
)
async def test_hypercorn_serves_the_reference_apps_by_module_path(name: str, transport: str) -> None:
    env = {"TRIO_COUNTERS_TRANSPORT": transport}
    async with serving(f'benchmarks.reference:served("{name}")', env=env, cwd=ROOT) as server:
        assert (await request(server.port, "/inc?name=i")).status == 200
        assert (await request(server.port, "/get?name=i")).body.strip() == "i: 1"
    assert server.tracebacks() == []
