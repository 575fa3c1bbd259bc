"""Redis data the API cannot represent, written by something else into the shared hash.

- A counter's value follows the API's integer rule -- a signed 64-bit integer in
  canonical form, what ``/set`` writes -- or it is ``CounterCorrupt``: 409 without
  ``Retry-After`` on ``/get`` and ``/inc`` (whose script checks before ``HINCRBY``,
  so the value is never touched), and ``/set`` replaces it.
- The key ``trio_counters`` holding another type is ``StoreMisconfigured`` (WRONGTYPE):
  500, logged once as exactly that, and service resumes once the key is gone.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator

import pytest
import trio

from trio_counters import create_app
from trio_counters.stores import INT64_MAX, INT64_MIN
from trio_counters.stores.redis import HASH_KEY, RECONNECT_INTERVAL
from trio_counters.testing.redis import RedisServer, command

PROMPT = 5

#: Values /get used to show (or show converted) and /inc used to answer 503 for.
CORRUPT = [
    "99999999999999999999",  # past int64
    str(INT64_MAX + 1),
    str(INT64_MIN - 1),
    "05",  # not canonical: /set would store 5
    "-05",
    "+5",
    "-0",
    "1_000",  # int() takes these three; the API does not
    "٣",
    " 5",
    "5 ",
    "5\n",
    "",
    "1.0",
    "1e3",
    "0x10",
    "abc",
]


@pytest.fixture
async def redis_app(redis_url: str) -> AsyncIterator[object]:
    app = create_app(store="redis", redis_url=redis_url)
    async with app.test_app():
        yield app


async def call(app, path: str) -> tuple[int, str, str | None]:  # type: ignore[no-untyped-def]
    response = await app.test_client().get(path)
    body = await response.get_data(as_text=True)
    assert body.endswith("\n") and body.count("\n") == 1, body  # one line, always
    return response.status_code, body[:-1], response.headers.get("Retry-After")


def hset_raw(port: int, name: bytes, value: bytes) -> None:
    """HSET with any bytes, as another program might write them."""
    args = [b"HSET", HASH_KEY.encode(), name, value]
    request = b"*4\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in args)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(request)
        assert connection.recv(64).startswith(b":")


def stored(port: int, name: str) -> bytes:
    return command(port, "HGET", HASH_KEY, name)


def bulk(value: str) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value.encode()), value.encode())


@pytest.mark.parametrize("value", CORRUPT, ids=repr)
async def test_a_value_the_api_could_not_have_written_is_corrupt_and_never_touched(
    redis_app, redis_server: RedisServer, value: str  # type: ignore[no-untyped-def]
) -> None:
    command(redis_server.port, "HSET", HASH_KEY, "x", value)
    message = f"x holds {value!r}, not a signed 64-bit integer in canonical form; /set replaces it"
    assert await call(redis_app, "/get?name=x") == (409, message, None)
    assert await call(redis_app, "/inc?name=x") == (409, message, None)
    assert stored(redis_server.port, "x") == bulk(value)  # /inc did not touch it
    # Not Redis' unavailability: nothing counted as a 503.
    stats = json.loads((await call(redis_app, "/stats"))[1])
    assert (stats["redis"]["connected"], stats["redis"]["unavailable"]) == (True, 0)
    # The client's remedy: /set replaces it.
    assert await call(redis_app, "/set?name=x&val=7") == (200, "ok", None)
    assert await call(redis_app, "/inc?name=x") == (200, "ok", None)
    assert await call(redis_app, "/get?name=x") == (200, "x: 8", None)


async def test_bytes_that_are_not_even_utf8_are_corrupt(
    redis_app, redis_server: RedisServer  # type: ignore[no-untyped-def]
) -> None:
    hset_raw(redis_server.port, b"x", b"\xff")
    message = "x holds b'\\xff', not a signed 64-bit integer in canonical form; /set replaces it"
    assert await call(redis_app, "/get?name=x") == (409, message, None)
    assert await call(redis_app, "/inc?name=x") == (409, message, None)
    assert stored(redis_server.port, "x") == b"$1\r\n\xff\r\n"


async def test_a_long_corrupt_value_is_shown_cut_short(
    redis_app, redis_server: RedisServer  # type: ignore[no-untyped-def]
) -> None:
    value = "7" * 100_000
    command(redis_server.port, "HSET", HASH_KEY, "x", value)
    message = (
        f"x holds {'7' * 40!r} (the first 40 of 100000 characters), not a signed 64-bit "
        "integer in canonical form; /set replaces it"
    )
    assert await call(redis_app, "/get?name=x") == (409, message, None)
    assert await call(redis_app, "/inc?name=x") == (409, message, None)


@pytest.mark.parametrize(
    "value", ["0", "-1", "42", str(INT64_MAX - 1), str(INT64_MIN), "-999999999999999999"]
)
async def test_canonical_values_are_read_and_incremented(
    redis_app, redis_server: RedisServer, value: str  # type: ignore[no-untyped-def]
) -> None:
    command(redis_server.port, "HSET", HASH_KEY, "x", value)
    assert await call(redis_app, "/get?name=x") == (200, f"x: {value}", None)
    assert await call(redis_app, "/inc?name=x") == (200, "ok", None)
    assert await call(redis_app, "/get?name=x") == (200, f"x: {int(value) + 1}", None)


async def test_the_largest_value_is_read_and_refuses_to_overflow(
    redis_app, redis_server: RedisServer  # type: ignore[no-untyped-def]
) -> None:
    command(redis_server.port, "HSET", HASH_KEY, "x", str(INT64_MAX))
    assert await call(redis_app, "/get?name=x") == (200, f"x: {INT64_MAX}", None)
    status, body, retry = await call(redis_app, "/inc?name=x")
    assert (status, retry) == (409, None) and body.startswith(f"x is {INT64_MAX}: adding 1")
    assert stored(redis_server.port, "x") == bulk(str(INT64_MAX))


# -- the key of the wrong type ---------------------------------------------------


def _logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "trio_counters.stores.redis"]


async def test_a_key_of_the_wrong_type_is_reported_as_exactly_that(
    redis_url: str, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    command(redis_server.port, "SET", HASH_KEY, "not a hash")
    message = (
        f"redis at {redis_url} holds a string at key 'trio_counters', not the hash of "
        "counters (WRONGTYPE): delete or rename that key"
    )
    app = create_app(store="redis", redis_url=redis_url)
    with trio.fail_after(PROMPT):
        async with app.test_app():
            for path in ("/get?name=i", "/inc?name=i", "/set?name=i&val=3"):
                assert await call(app, path) == (500, message, None), path
            await trio.sleep(RECONNECT_INTERVAL * 1.5)  # the background task checks again
            stats = json.loads((await call(app, "/stats"))[1])
            # Redis answered: connected; nothing was a 503.
            assert (stats["redis"]["connected"], stats["redis"]["unavailable"]) == (True, 0)
            assert command(redis_server.port, "GET", HASH_KEY) == bulk("not a hash")  # untouched

            # Once an operator removes the key, service resumes and i and j come back.
            command(redis_server.port, "DEL", HASH_KEY)
            while (reply := await call(app, "/get?name=i"))[0] != 200:
                await trio.sleep(RECONNECT_INTERVAL / 5)
            assert reply == (200, "i: 0", None)
    # Logged once, at start, and never as "unreachable".
    assert _logged(caplog)[:1] == [f"{message}; answering 500 until that is fixed"]
    assert not any("unreachable" in line for line in _logged(caplog))
    assert len([line for line in _logged(caplog) if "WRONGTYPE" in line]) == 1
