"""Every endpoint and every refusal, through Quart's test client, for every strategy."""

from __future__ import annotations

import pytest
import trio

from trio_counters import create_app
from trio_counters.stores import INT64_MAX, INT64_MIN


async def call(client, path: str, method: str = "GET", **kwargs) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    response = await client.open(path, method=method, **kwargs)
    body = await response.get_data(as_text=True)
    # The contract for every answer, good or bad: one line of UTF-8 text.
    assert response.content_type == "text/plain; charset=utf-8", (path, response.content_type)
    assert body.endswith("\n") and body.count("\n") == 1, (path, body)
    return response.status_code, body.rstrip("\n")


def store_of(app):  # type: ignore[no-untyped-def]
    return app.extensions["trio_counters"].store


async def test_seed_curl_transcript(client) -> None:  # type: ignore[no-untyped-def]
    assert await call(client, "/set?name=x&val=0") == (200, "ok")
    assert await call(client, "/get?name=x") == (200, "x: 0")
    assert await call(client, "/inc?name=x") == (200, "ok")
    assert await call(client, "/get?name=x") == (200, "x: 1")


async def test_i_and_j_exist_at_zero_for_the_seed_ab_run(client) -> None:  # type: ignore[no-untyped-def]
    assert await call(client, "/get?name=i") == (200, "i: 0")
    assert await call(client, "/inc?name=j") == (200, "ok")
    assert await call(client, "/get?name=j") == (200, "j: 1")


async def test_set_and_inc_accept_post_with_query_or_form(client) -> None:  # type: ignore[no-untyped-def]
    assert await call(client, "/set?name=p&val=5", "POST") == (200, "ok")
    assert await call(client, "/inc", "POST", form={"name": "p"}) == (200, "ok")
    assert await call(client, "/set", "POST", form={"name": "q", "val": "-3"}) == (200, "ok")
    assert await call(client, "/get?name=p") == (200, "p: 6")
    assert await call(client, "/get?name=q") == (200, "q: -3")


async def test_names_are_percent_decoded_text(client) -> None:  # type: ignore[no-untyped-def]
    assert await call(client, "/set?name=caf%C3%A9%20au%20lait&val=2") == (200, "ok")
    assert await call(client, "/get?name=caf%C3%A9+au+lait") == (200, "café au lait: 2")


@pytest.mark.parametrize(
    "val", ["0", "+5", "-0", "007", str(INT64_MAX), str(INT64_MIN), "-" + "0" * 40 + "1"]
)
async def test_set_accepts_base_10_int64(client, val: str) -> None:  # type: ignore[no-untyped-def]
    assert await call(client, "/set", query_string={"name": "v", "val": val}) == (200, "ok")
    assert await call(client, "/get?name=v") == (200, f"v: {int(val)}")


REFUSALS = [
    # (method, path, query, status, message)
    ("GET", "/get", {}, 400, "missing name: give ?name=COUNTER"),
    ("GET", "/get", {"name": ""}, 400, "missing name: give ?name=COUNTER"),
    ("GET", "/inc", {}, 400, "missing name: give ?name=COUNTER"),
    ("GET", "/set", {"val": "1"}, 400, "missing name: give ?name=COUNTER"),
    ("GET", "/set", {"name": "i"}, 400, "missing val: give &val=INTEGER"),
    ("GET", "/set", {"name": "i", "val": ""}, 400, "missing val: give &val=INTEGER"),
    ("GET", "/get", {"name": "nope"}, 404, "nope not found"),
    ("GET", "/inc", {"name": "nope"}, 404, "nope not found"),
    ("POST", "/inc", {"name": "nope"}, 404, "nope not found"),
    ("GET", "/get", {"name": "a\nb"}, 400, "name must not contain control characters or line breaks"),
    ("GET", "/set", {"name": "a\x00", "val": "1"}, 400, "name must not contain control characters or line breaks"),
    ("GET", "/get", {"name": "a\u2028b"}, 400, "name must not contain control characters or line breaks"),
    ("OPTIONS", "/get", {"name": "i"}, 405, "method OPTIONS not allowed here; use GET, HEAD"),
    ("GET", "/nothere", {}, 404, "not found: the endpoints are /get, /set, /inc, /stats and /metrics"),
    ("PUT", "/set", {"name": "i", "val": "1"}, 405, "method PUT not allowed here; use GET, POST"),
    ("HEAD", "/set", {"name": "h", "val": "5"}, 405, "method HEAD not allowed here; use GET, POST"),
    ("DELETE", "/inc", {"name": "i"}, 405, "method DELETE not allowed here; use GET, POST"),
    ("HEAD", "/inc", {"name": "i"}, 405, "method HEAD not allowed here; use GET, POST"),
    ("POST", "/get", {"name": "i"}, 405, "method POST not allowed here; use GET, HEAD"),
]  # fmt: skip
BAD_VALUES = [" 5", "5 ", "1_000", "\u0663", "1e3", "0x10", "1.0", "--1", "+", "five", "²"]
OUT_OF_RANGE = [str(INT64_MAX + 1), str(INT64_MIN - 1), "9" * 20, "1" * 4000]


async def _snapshot(app, client) -> tuple:  # type: ignore[no-untyped-def]
    return (
        await call(client, "/get?name=i"),
        await call(client, "/get?name=j"),
        store_of(app).statistics().counters,
    )


@pytest.mark.parametrize(("method", "path", "query", "status", "message"), REFUSALS)
async def test_refusal_has_status_and_message_and_changes_nothing(
    app, client, method: str, path: str, query: dict, status: int, message: str  # type: ignore[no-untyped-def]
) -> None:
    before = await _snapshot(app, client)
    assert await call(client, path, method, query_string=query) == (status, message)
    assert await _snapshot(app, client) == before


@pytest.mark.parametrize("val", BAD_VALUES)
async def test_set_refuses_what_is_not_a_base_10_integer(app, client, val: str) -> None:  # type: ignore[no-untyped-def]
    before = await _snapshot(app, client)
    status, message = await call(client, "/set", query_string={"name": "i", "val": val})
    assert (status, message) == (400, "val must be a base-10 integer: an optional sign and ASCII digits")
    assert await _snapshot(app, client) == before


@pytest.mark.parametrize("val", OUT_OF_RANGE)
async def test_set_refuses_values_outside_int64(app, client, val: str) -> None:  # type: ignore[no-untyped-def]
    before = await _snapshot(app, client)
    status, message = await call(client, "/set", query_string={"name": "i", "val": val})
    assert status == 400 and message.startswith("val must be within the signed 64-bit range")
    assert await _snapshot(app, client) == before


async def test_query_string_that_is_not_utf8_is_400_and_changes_nothing(app, client) -> None:  # type: ignore[no-untyped-def]
    before = await _snapshot(app, client)
    not_utf8 = {"query_string": b"name=i&val=5&x=\xff"}
    assert await call(client, "/set", scope_base=not_utf8) == (
        400,
        "query string is not valid UTF-8",
    )
    assert await _snapshot(app, client) == before


async def test_duplicate_parameters_are_refused(app, client) -> None:  # type: ignore[no-untyped-def]
    assert await call(client, "/inc?name=i&name=j") == (400, "name given 2 times: give it once")
    assert await call(client, "/set?name=i&val=1&val=2") == (400, "val given 2 times: give it once")
    assert await _snapshot(app, client) == ((200, "i: 0"), (200, "j: 0"), 2)


async def test_name_length_limit(app, client) -> None:  # type: ignore[no-untyped-def]
    longest = "n" * 256
    assert await call(client, "/set", query_string={"name": longest, "val": "1"}) == (200, "ok")
    too_long = "n" * 257
    assert await call(client, "/set", query_string={"name": too_long, "val": "1"}) == (
        400,
        "name is 257 characters long; the limit is 256",
    )
    assert store_of(app).statistics().counters == 3


async def test_inc_past_int64_max_is_409_and_leaves_the_value(client) -> None:  # type: ignore[no-untyped-def]
    await call(client, "/set", query_string={"name": "big", "val": str(INT64_MAX)})
    status, message = await call(client, "/inc?name=big")
    assert status == 409
    assert message == f"big is {INT64_MAX}: adding 1 would leave the signed 64-bit range; value unchanged"
    assert await call(client, "/get?name=big") == (200, f"big: {INT64_MAX}")


async def test_oversized_post_body_is_413_and_changes_nothing(app, client) -> None:  # type: ignore[no-untyped-def]
    status, _ = await call(client, "/set", "POST", form={"name": "i", "val": "7", "pad": "x" * 10_000})
    assert status == 413
    assert await _snapshot(app, client) == ((200, "i: 0"), (200, "j: 0"), 2)


async def test_query_string_over_the_limit_is_414_and_changes_nothing(app, client) -> None:  # type: ignore[no-untyped-def]
    status, message = await call(client, "/set?name=i&val=5&pad=" + "x" * 5000)
    assert (status, message) == (414, "query string over 4096 bytes")
    assert await _snapshot(app, client) == ((200, "i: 0"), (200, "j: 0"), 2)


async def test_headers_over_the_limit_are_431_and_change_nothing(app, client) -> None:  # type: ignore[no-untyped-def]
    padding = {"X-Padding": "p" * (16 * 1024)}
    status, message = await call(client, "/set?name=big&val=5", headers=padding)
    assert (status, message) == (431, "request headers over 16384 bytes")
    assert await _snapshot(app, client) == ((200, "i: 0"), (200, "j: 0"), 2)


async def test_counter_limit_refuses_new_names_and_keeps_existing_working(strategy: str) -> None:
    app = create_app(store=strategy, max_counters=3)
    async with app.test_app():
        client = app.test_client()
        assert await call(client, "/set?name=x&val=1") == (200, "ok")
        status, message = await call(client, "/set?name=y&val=1")
        assert status == 507
        assert message == "cannot create y: the store holds its limit of 3 counters"
        assert (await call(client, "/get?name=y"))[0] == 404
        assert await call(client, "/inc?name=x") == (200, "ok")
        assert await call(client, "/set?name=i&val=9") == (200, "ok")
        assert await call(client, "/get?name=x") == (200, "x: 2")


async def _hammer_inc(client, n: int) -> None:  # type: ignore[no-untyped-def]
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(call, client, "/inc?name=i")


async def test_naive_store_loses_updates_through_the_http_layer() -> None:
    app = create_app(store="naive")
    async with app.test_app():
        client = app.test_client()
        await _hammer_inc(client, 200)
        status, body = await call(client, "/get?name=i")
        assert status == 200 and int(body.split(": ")[1]) < 200


async def test_inc_concurrency_of_one_makes_even_the_naive_store_exact() -> None:
    # The seed's rate-limited variant: a CapacityLimiter of 1 around /inc
    # serialises the handlers, so the naive read-checkpoint-write never overlaps.
    app = create_app(store="naive", inc_concurrency=1)
    async with app.test_app():
        client = app.test_client()
        await _hammer_inc(client, 200)
        assert await call(client, "/get?name=i") == (200, "i: 200")


async def test_safe_strategies_count_concurrent_http_increments_exactly(safe_strategy: str) -> None:
    app = create_app(store=safe_strategy)
    async with app.test_app():
        client = app.test_client()
        await _hammer_inc(client, 500)
        assert await call(client, "/get?name=i") == (200, "i: 500")


async def test_a_store_that_does_not_answer_in_time_gets_503(autojump_clock) -> None:  # type: ignore[no-untyped-def]
    app = create_app(store="lock", store_timeout=2)
    async with app.test_app():
        client = app.test_client()
        async with store_of(app)._lock:  # something holds the table for too long
            start = trio.current_time()
            response = await client.get("/inc?name=i")
            assert trio.current_time() - start == pytest.approx(2)
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        assert await response.get_data(as_text=True) == "the store did not answer within 2 s; try again\n"
        assert await call(client, "/get?name=i") == (200, "i: 0")  # the timed-out inc did nothing


async def test_channel_store_answers_503_once_serving_has_ended() -> None:
    app = create_app(store="channel")
    async with app.test_app():
        client = app.test_client()
        assert await call(client, "/inc?name=i") == (200, "ok")
    with trio.fail_after(5):
        assert await call(client, "/inc?name=i") == (503, "the counter manager has stopped")


async def test_waiting_for_the_inc_limiter_counts_against_the_store_timeout(autojump_clock) -> None:  # type: ignore[no-untyped-def]
    app = create_app(store="lock", inc_concurrency=1, store_timeout=2)
    async with app.test_app():
        client = app.test_client()
        answered_at: list[float] = []

        async def inc() -> None:
            response = await client.get("/inc?name=i")
            assert response.status_code == 503
            answered_at.append(trio.current_time())

        start = trio.current_time()
        async with store_of(app)._lock:  # the table is held: one /inc holds the limiter, one waits
            async with trio.open_nursery() as nursery:
                nursery.start_soon(inc)
                nursery.start_soon(inc)
        assert [t - start for t in answered_at] == [pytest.approx(2), pytest.approx(2)]
        assert await call(client, "/get?name=i") == (200, "i: 0")
