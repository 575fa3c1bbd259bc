"""/stats and /metrics: what the server shows about itself, for every strategy."""

from __future__ import annotations

import json

import trio
from prometheus_client.parser import text_string_to_metric_families

from trio_counters import create_app


async def stats_of(client) -> dict:  # type: ignore[no-untyped-def]
    response = await client.get("/stats")
    assert response.status_code == 200
    assert response.content_type == "application/json"
    body = await response.get_data(as_text=True)
    assert body.endswith("\n") and body.count("\n") == 1  # one line, like every answer
    return json.loads(body)


async def metrics_of(client) -> dict[str, list]:  # type: ignore[no-untyped-def]
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=")
    text = await response.get_data(as_text=True)
    # prometheus-client's own parser must read it.
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def sample(samples: list, **labels: str) -> float:
    [value] = [s.value for s in samples if all(s.labels.get(k) == v for k, v in labels.items())]
    return value


async def test_stats_show_strategy_counters_and_requests(client, strategy: str) -> None:  # type: ignore[no-untyped-def]
    await client.get("/inc?name=i")
    await client.get("/inc?name=i")
    await client.get("/get?name=nope")
    await client.get("/set?name=x&val=zz")
    await client.get("/set?name=x&val=1")
    stats = await stats_of(client)
    assert stats["strategy"] == strategy
    assert (stats["counters"], stats["max_counters"]) == (3, 1_000_000)
    assert stats["requests"] == {
        "served": {"/inc": 2, "/set": 1},
        "refused": {"not_found": 1, "bad_request": 1},
    }
    assert stats["inc_limiter"] is None
    if strategy == "lock":
        assert stats["lock"] == {"locked": False, "tasks_waiting": 0}
    if strategy == "channel":
        assert stats["channel"] == {
            "buffer_used": 0,
            "buffer_size": 0,
            "tasks_waiting_send": 0,
            "tasks_waiting_receive": 1,
            "manager_running": True,
            "manager_restarts": 0,
        }
    if strategy == "naive":
        assert stats["race"] == {"lost_updates": 0, "overwritten_sets": 0, "worst": {}}
    else:
        assert stats["race"] is None


async def test_naive_stats_report_exactly_the_lost_updates() -> None:
    app = create_app(store="naive")
    async with app.test_app():
        client = app.test_client()
        async with trio.open_nursery() as nursery:
            for _ in range(300):
                nursery.start_soon(client.get, "/inc?name=i")
        final = int((await (await client.get("/get?name=i")).get_data(as_text=True)).split(": ")[1])
        stats = await stats_of(client)
        assert stats["requests"]["served"]["/inc"] == 300
        assert final < 300
        assert stats["race"]["lost_updates"] == 300 - final
        assert stats["race"]["worst"] == {"i": 300 - final}
        metrics = await metrics_of(client)
        assert sample(metrics["trio_counters_lost_updates"], strategy="naive") == 300 - final


async def test_stats_show_the_inc_limiter() -> None:
    app = create_app(store="lock", inc_concurrency=3)
    async with app.test_app():
        client = app.test_client()
        stats = await stats_of(client)
        assert stats["inc_limiter"] == {"borrowed": 0, "total": 3, "waiting": 0}


async def test_metrics_parse_and_carry_requests_latencies_and_trio_statistics(
    client, strategy: str  # type: ignore[no-untyped-def]
) -> None:
    for _ in range(3):
        await client.get("/inc?name=i")
    await client.get("/get?name=nope")
    await client.get("/no/such/path")
    metrics = await metrics_of(client)
    requests = metrics["trio_counters_requests"]
    assert sample(requests, endpoint="/inc", status="200") == 3
    assert sample(requests, endpoint="/get", status="404") == 1
    assert sample(requests, endpoint="other", status="404") == 1  # random paths share a label
    latency = metrics["trio_counters_request_duration_seconds"]
    assert sample(latency, endpoint="/inc", le="+Inf") == 3
    assert sample(metrics["trio_counters_counters"], strategy=strategy) == 2
    assert sample(metrics["trio_counters_max_counters"], strategy=strategy) == 1_000_000
    if strategy == "lock":
        assert sample(metrics["trio_counters_lock_tasks_waiting"], strategy="lock") == 0
        assert sample(metrics["trio_counters_lock_locked"], strategy="lock") == 0
    if strategy == "channel":
        assert sample(metrics["trio_counters_channel_buffer_used"], strategy="channel") == 0
        assert sample(metrics["trio_counters_channel_manager_restarts"], strategy="channel") == 0
    assert ("trio_counters_lost_updates" in metrics) == (strategy == "naive")


async def test_metrics_show_the_inc_limiter_while_requests_wait() -> None:
    app = create_app(store="lock", inc_concurrency=1)
    async with app.test_app():
        client = app.test_client()
        store = app.extensions["trio_counters"].store
        async with trio.open_nursery() as nursery:
            async with store._lock:  # hold the table: one /inc borrows, two wait
                for _ in range(3):
                    nursery.start_soon(client.get, "/inc?name=i")
                await trio.testing.wait_all_tasks_blocked()
                metrics = await metrics_of(client)
                assert sample(metrics["trio_counters_inc_limiter_borrowed"], strategy="lock") == 1
                assert sample(metrics["trio_counters_inc_limiter_waiting"], strategy="lock") == 2
                assert sample(metrics["trio_counters_lock_tasks_waiting"], strategy="lock") == 1
        assert (await stats_of(client))["inc_limiter"]["borrowed"] == 0


async def test_a_failing_manager_answers_503_promptly_and_the_server_keeps_counting(
    caplog,  # type: ignore[no-untyped-def]
) -> None:
    app = create_app(store="channel")
    async with app.test_app():
        client = app.test_client()
        store = app.extensions["trio_counters"].store
        handle = store._handle
        broken = True

        def fail_once(command):  # type: ignore[no-untyped-def]
            nonlocal broken
            if broken:
                broken = False
                raise RuntimeError("injected manager failure")
            handle(command)

        store._handle = fail_once
        with trio.fail_after(5):
            failed = await client.get("/inc?name=i")
            assert failed.status_code == 503
            assert "manager failed" in await failed.get_data(as_text=True)
            assert (await client.get("/inc?name=i")).status_code == 200
            assert await (await client.get("/get?name=i")).get_data(as_text=True) == "i: 1\n"
        stats = await stats_of(client)
        assert stats["channel"]["manager_restarts"] == 1
        assert stats["requests"]["refused"] == {"service_unavailable": 1}
    assert any("injected manager failure" in (r.exc_text or "") for r in caplog.records)
