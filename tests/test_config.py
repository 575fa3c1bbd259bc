"""Settings: an explicit argument wins, then TRIO_COUNTERS_*, then the default; a value
the server cannot run with is refused at start, by name, with what it accepts."""

from __future__ import annotations

import re

import pytest

from trio_counters import ConfigError, Settings, create_app
from trio_counters.app import MAX_BODY_BYTES, MAX_QUERY_BYTES
from trio_counters.config import (
    CHANNEL_BUFFER_RANGE,
    DEFAULT_MAX_COUNTERS,
    DEFAULT_STORE,
    INC_CONCURRENCY_RANGE,
    MAX_COUNTERS_RANGE,
    MAX_NAME_LENGTH_RANGE,
    MIN_TIMEOUT,
    REDIS_TIMEOUT_RANGE,
    STORE_TIMEOUT_RANGE,
)
from trio_counters.stores import INT64_MAX
from trio_counters.testing import ServerError, run_server

INT64 = str(INT64_MAX)


def refused(message: str) -> object:
    """pytest.raises for a ConfigError whose message is exactly ``message``."""
    return pytest.raises(ConfigError, match="^" + re.escape(message) + "$")


def test_defaults_apply_when_nothing_is_given() -> None:
    settings = Settings.resolve({})
    assert (settings.store, settings.max_counters) == (DEFAULT_STORE, DEFAULT_MAX_COUNTERS)


def test_environment_fills_what_is_not_given_and_arguments_win() -> None:
    environ = {"TRIO_COUNTERS_STORE": "naive", "TRIO_COUNTERS_MAX_COUNTERS": " 50 "}
    assert Settings.resolve(environ).store == "naive"
    settings = Settings.resolve(environ, store="channel")
    assert (settings.store, settings.max_counters) == ("channel", 50)


@pytest.mark.parametrize(
    ("environ", "value"),
    [
        ({"TRIO_COUNTERS_MAX_COUNTERS": "+50"}, 50),
        ({"TRIO_COUNTERS_MAX_COUNTERS": "0050"}, 50),
        ({"TRIO_COUNTERS_MAX_COUNTERS": INT64}, INT64_MAX),
        ({"TRIO_COUNTERS_STORE_TIMEOUT": "2"}, 2.0),
        ({"TRIO_COUNTERS_STORE_TIMEOUT": " .5 "}, 0.5),
        ({"TRIO_COUNTERS_STORE_TIMEOUT": "0.01"}, MIN_TIMEOUT),
        ({"TRIO_COUNTERS_STORE_TIMEOUT": "300"}, 300.0),
        ({"TRIO_COUNTERS_MAX_COUNTERS": ""}, DEFAULT_MAX_COUNTERS),  # blank: not set
    ],
    ids=lambda value: repr(value) if not isinstance(value, dict) else ",".join(value.values()),
)
def test_good_environment_values_are_read(environ: dict, value: object) -> None:
    name = next(iter(environ)).removeprefix("TRIO_COUNTERS_").lower()
    assert getattr(Settings.resolve(environ), name) == value


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        # The messages this test pinned before, now naming the variable and the range.
        ({"TRIO_COUNTERS_STORE": "mutex"},
         "TRIO_COUNTERS_STORE (store) must be one of naive, lock, channel, redis, got 'mutex'"),
        ({"TRIO_COUNTERS_MAX_COUNTERS": "lots"},
         f"TRIO_COUNTERS_MAX_COUNTERS (max_counters) must be an integer from 2 to {INT64} "
         "(ASCII digits and an optional sign), got 'lots'"),
        ({"TRIO_COUNTERS_MAX_COUNTERS": "1"},
         f"TRIO_COUNTERS_MAX_COUNTERS (max_counters) must be an integer from 2 to {INT64}, got 1"),
        ({"TRIO_COUNTERS_STORE_TIMEOUT": "0"},
         "TRIO_COUNTERS_STORE_TIMEOUT (store_timeout) must be a number of seconds from 0.01 to 300, got 0.0"),
        ({"TRIO_COUNTERS_INC_CONCURRENCY": "-1"},
         "TRIO_COUNTERS_INC_CONCURRENCY (inc_concurrency) must be an integer from 0 to 100000, got -1"),
        # int() would take these: the API's rule does not.
        ({"TRIO_COUNTERS_MAX_COUNTERS": "١٠"},
         f"TRIO_COUNTERS_MAX_COUNTERS (max_counters) must be an integer from 2 to {INT64} "
         "(ASCII digits and an optional sign), got '١٠'"),
        ({"TRIO_COUNTERS_MAX_COUNTERS": "1_000"},
         f"TRIO_COUNTERS_MAX_COUNTERS (max_counters) must be an integer from 2 to {INT64} "
         "(ASCII digits and an optional sign), got '1_000'"),
        ({"TRIO_COUNTERS_CHANNEL_BUFFER": "1 0"},
         "TRIO_COUNTERS_CHANNEL_BUFFER (channel_buffer) must be an integer from 0 to 100000 "
         "(ASCII digits and an optional sign), got '1 0'"),
        ({"TRIO_COUNTERS_CHANNEL_BUFFER": "1.5"},
         "TRIO_COUNTERS_CHANNEL_BUFFER (channel_buffer) must be an integer from 0 to 100000 "
         "(ASCII digits and an optional sign), got '1.5'"),
        # Upper bounds.
        ({"TRIO_COUNTERS_MAX_COUNTERS": "9223372036854775808"},
         f"TRIO_COUNTERS_MAX_COUNTERS (max_counters) must be an integer from 2 to {INT64}, "
         "got 9223372036854775808"),
        ({"TRIO_COUNTERS_MAX_COUNTERS": "9" * 30},
         f"TRIO_COUNTERS_MAX_COUNTERS (max_counters) must be an integer from 2 to {INT64}, got '{'9' * 30}'"),
        ({"TRIO_COUNTERS_CHANNEL_BUFFER": "100001"},
         "TRIO_COUNTERS_CHANNEL_BUFFER (channel_buffer) must be an integer from 0 to 100000, got 100001"),
        ({"TRIO_COUNTERS_MAX_NAME_LENGTH": "4097"},
         "TRIO_COUNTERS_MAX_NAME_LENGTH (max_name_length) must be an integer from 1 to 4096, got 4097"),
        ({"TRIO_COUNTERS_STORE_TIMEOUT": "301"},
         "TRIO_COUNTERS_STORE_TIMEOUT (store_timeout) must be a number of seconds from 0.01 to 300, got 301.0"),
        # Seconds: a plain decimal, at least MIN_TIMEOUT. 1e-6 made the redis store
        # spin; 1e-300 never started.
        ({"TRIO_COUNTERS_REDIS_TIMEOUT": "1e-6"},
         "TRIO_COUNTERS_REDIS_TIMEOUT (redis_timeout) must be a number of seconds from 0.01 to 30 "
         "(a plain decimal such as 2.5), got '1e-6'"),
        ({"TRIO_COUNTERS_REDIS_TIMEOUT": "1e-300"},
         "TRIO_COUNTERS_REDIS_TIMEOUT (redis_timeout) must be a number of seconds from 0.01 to 30 "
         "(a plain decimal such as 2.5), got '1e-300'"),
        ({"TRIO_COUNTERS_REDIS_TIMEOUT": "0.001"},
         "TRIO_COUNTERS_REDIS_TIMEOUT (redis_timeout) must be a number of seconds from 0.01 to 30, got 0.001"),
        ({"TRIO_COUNTERS_STORE_TIMEOUT": "inf"},
         "TRIO_COUNTERS_STORE_TIMEOUT (store_timeout) must be a number of seconds from 0.01 to 300 "
         "(a plain decimal such as 2.5), got 'inf'"),
        ({"TRIO_COUNTERS_STORE_TIMEOUT": "1_0"},
         "TRIO_COUNTERS_STORE_TIMEOUT (store_timeout) must be a number of seconds from 0.01 to 300 "
         "(a plain decimal such as 2.5), got '1_0'"),
    ],  # fmt: skip
)
def test_bad_environment_values_are_refused_naming_the_variable_and_the_range(
    environ: dict, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with refused(message):
        Settings.resolve(environ)
    for variable, value in environ.items():  # what hypercorn's import of trio_counters:app meets
        monkeypatch.setenv(variable, value)
    with refused(message):
        create_app()


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"max_counters": "5"},
         f"max_counters must be an integer from 2 to {INT64}, got '5' (a str)"),
        ({"max_counters": 2.5},  # started, and held 3 counters
         f"max_counters must be an integer from 2 to {INT64}, got 2.5 (a float)"),
        ({"max_counters": 5.0},
         f"max_counters must be an integer from 2 to {INT64}, got 5.0 (a float)"),
        ({"max_counters": True},
         f"max_counters must be an integer from 2 to {INT64}, got True (a bool)"),
        ({"max_counters": 1},
         f"max_counters must be an integer from 2 to {INT64}, got 1"),
        ({"max_counters": INT64_MAX + 1},
         f"max_counters must be an integer from 2 to {INT64}, got {INT64_MAX + 1}"),
        ({"store_timeout": 10**400},  # no OverflowError on the way
         f"store_timeout must be a number of seconds from 0.01 to 300, got {str(10**400)[:50]}... (401 characters)"),
        ({"inc_concurrency": 1.5},
         "inc_concurrency must be an integer from 0 to 100000, got 1.5 (a float)"),
        ({"channel_buffer": 1.5},  # was trio's own TypeError
         "channel_buffer must be an integer from 0 to 100000, got 1.5 (a float)"),
        ({"channel_buffer": 10**9},
         "channel_buffer must be an integer from 0 to 100000, got 1000000000"),
        ({"max_name_length": 0},
         "max_name_length must be an integer from 1 to 4096, got 0"),
        ({"store_timeout": "3"},
         "store_timeout must be a number of seconds from 0.01 to 300, got '3' (a str)"),
        ({"store_timeout": False},
         "store_timeout must be a number of seconds from 0.01 to 300, got False (a bool)"),
        ({"store_timeout": float("nan")},
         "store_timeout must be a number of seconds from 0.01 to 300, got nan"),
        ({"store_timeout": float("inf")},
         "store_timeout must be a number of seconds from 0.01 to 300, got inf"),
        ({"redis_timeout": 1e-6},
         "redis_timeout must be a number of seconds from 0.01 to 30, got 1e-06"),
        ({"redis_timeout": 31},
         "redis_timeout must be a number of seconds from 0.01 to 30, got 31"),
        ({"store": 3},
         "store must be one of naive, lock, channel, redis, got 3 (an int)"),
        ({"redis_url": b"redis://127.0.0.1:6379/0"},
         "redis_url must be a URL, got b'redis://127.0.0.1:6379/0' (a bytes)"),
    ],  # fmt: skip
)
def test_bad_arguments_are_refused_by_create_app_naming_the_argument(given: dict, message: str) -> None:
    with refused(message):
        create_app(**given)


def test_create_app_refuses_a_counter_limit_without_room_for_i_and_j() -> None:
    with pytest.raises(ConfigError, match="max_counters must be an integer from 2 to"):
        create_app(max_counters=1)


def test_seconds_may_be_given_as_an_int_and_are_kept_as_floats() -> None:
    settings = Settings.resolve({}, store_timeout=2, redis_timeout=1)
    assert (settings.store_timeout, settings.redis_timeout) == (2.0, 1.0)
    assert type(settings.store_timeout) is float


def test_the_ranges_are_what_the_messages_and_the_readme_say() -> None:
    assert MAX_COUNTERS_RANGE == (2, INT64_MAX)
    # A longer name could never arrive: the query string and the form body are
    # refused past this many bytes.
    assert MAX_NAME_LENGTH_RANGE == (1, MAX_QUERY_BYTES) == (1, MAX_BODY_BYTES)
    assert INC_CONCURRENCY_RANGE == CHANNEL_BUFFER_RANGE == (0, 100_000)
    assert STORE_TIMEOUT_RANGE == (MIN_TIMEOUT, 300.0)
    # The redis store's first try at start lasts at most redis_timeout, which stays
    # well inside hypercorn's 60 s startup_timeout.
    assert REDIS_TIMEOUT_RANGE == (MIN_TIMEOUT, 30.0)
    # Both ends are accepted.
    Settings.resolve({}, max_counters=INT64_MAX, max_name_length=4096, inc_concurrency=100_000,
                     channel_buffer=100_000, store_timeout=300, redis_timeout=30)  # fmt: skip
    Settings.resolve({}, max_counters=2, max_name_length=1, inc_concurrency=0,
                     channel_buffer=0, store_timeout=0.01, redis_timeout=0.01)  # fmt: skip


# -- redis_timeout against store_timeout ---------------------------------------


def test_redis_timeout_must_be_below_store_timeout_with_the_redis_store() -> None:
    """A request gives up at store_timeout: with redis_timeout at or past it, a stall
    would be answered with a bare timeout (the store still drops the silent
    connection by itself; test_redis checks that)."""
    with refused(
        "redis_timeout must be below store_timeout with the redis store, got 1 s against 1 s: a "
        "request gives up at store_timeout, so it would answer a bare timeout where Redis is stalled"
    ):
        create_app(store="redis", store_timeout=1, redis_timeout=1)
    with refused(
        "TRIO_COUNTERS_REDIS_TIMEOUT (redis_timeout) must be below TRIO_COUNTERS_STORE_TIMEOUT "
        "(store_timeout) with the redis store, got 2 s against 0.5 s: a request gives up at "
        "store_timeout, so it would answer a bare timeout where Redis is stalled"
    ):
        Settings.resolve(
            {"TRIO_COUNTERS_STORE": "redis", "TRIO_COUNTERS_STORE_TIMEOUT": "0.5",
             "TRIO_COUNTERS_REDIS_TIMEOUT": "2"}
        )  # fmt: skip
    # Other strategies never use redis_timeout.
    assert Settings.resolve({}, store="lock", store_timeout=0.5).redis_timeout == 1.0
    assert Settings.resolve({}, store="redis", store_timeout=1.5, redis_timeout=1.4).store == "redis"


# -- redis_url -----------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://127.0.0.1:6379",
        "redis://127.0.0.1/",
        "redis://db.internal:6380/15",
        "redis://127.0.0.1:6379/99",  # how many databases a Redis has is Redis' business
        "redis://127.0.0.1:6379?db=3",
        "redis://:hunter2@[::1]:6379/1",
        "rediss://db:6380/0?ssl_cert_reqs=required",
        "unix:///run/redis.sock?db=2",
    ],
)
def test_good_redis_urls_are_accepted(url: str) -> None:
    assert Settings.resolve({}, redis_url=url).redis_url == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("localhost:6379",
         "redis_url must start with redis://, rediss:// or unix://, got 'localhost:6379'"),
        # A port out of range killed the worker with a ValueError traceback.
        ("redis://127.0.0.1:99999/0",
         "redis_url must have a port from 1 to 65535, got 'redis://127.0.0.1:99999/0'"),
        ("redis://127.0.0.1:0/0",
         "redis_url must have a port from 1 to 65535, got 'redis://127.0.0.1:0/0'"),
        ("redis://127.0.0.1:http/0",
         "redis_url must have a port from 1 to 65535, got 'redis://127.0.0.1:http/0'"),
        # These were database 0, silently (or a ValueError at the first connect).
        ("redis://127.0.0.1:6379/abc",
         "redis_url must name its database as a non-negative integer (redis://host:6379/0), "
         "got 'redis://127.0.0.1:6379/abc'"),
        ("redis://127.0.0.1:6379/-1",
         "redis_url must name its database as a non-negative integer (redis://host:6379/0), "
         "got 'redis://127.0.0.1:6379/-1'"),
        ("redis://127.0.0.1:6379/0/1",
         "redis_url must name its database as a non-negative integer (redis://host:6379/0), "
         "got 'redis://127.0.0.1:6379/0/1'"),
        ("redis://127.0.0.1:6379/٣",
         "redis_url must name its database as a non-negative integer (redis://host:6379/0), "
         "got 'redis://127.0.0.1:6379/٣'"),
        ("redis://:hunter2@127.0.0.1:6379/?db=x",  # and the password stays out
         "redis_url must name its database as a non-negative integer (redis://host:6379/0), "
         "got 'redis://:***@127.0.0.1:6379/?db=x'"),
        ("redis://127.0.0.1:6379/0?noreply=1",
         "redis_url may carry only db in its query, got 'noreply' in 'redis://127.0.0.1:6379/0?noreply=1'"),
        ("redis://:6379/0",
         "redis_url names no host, as in redis://127.0.0.1:6379/0, got 'redis://:6379/0'"),
        ("unix://",
         "redis_url names no socket, as in unix:///run/redis.sock, got 'unix://'"),
    ],  # fmt: skip
)
def test_bad_redis_urls_are_refused_at_start(url: str, message: str) -> None:
    with refused(message):
        create_app(store="redis", redis_url=url)


# -- what a user sees ------------------------------------------------------------


async def test_hypercorn_refuses_to_start_with_the_reason_in_its_log() -> None:
    """``TRIO_COUNTERS_REDIS_URL=redis://127.0.0.1:99999/0 hypercorn ... trio_counters:app``:
    the worker used to start, then die of a ValueError mid-serve. Now the app is
    refused as hypercorn imports it, and the log says which setting and why."""
    message = (
        "TRIO_COUNTERS_REDIS_URL (redis_url) must have a port from 1 to 65535, "
        "got 'redis://127.0.0.1:99999/0'"
    )
    with pytest.raises(ServerError) as caught:
        await run_server(
            env={"TRIO_COUNTERS_STORE": "redis", "TRIO_COUNTERS_REDIS_URL": "redis://127.0.0.1:99999/0"}
        )
    assert caught.value.returncode is not None  # it exited: it did not serve
    assert any(line.endswith(message) for line in caught.value.log_tail), caught.value


def test_unknown_keyword_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        create_app(stor="lock")  # type: ignore[call-arg]


def test_each_call_builds_a_fresh_app_with_its_own_store() -> None:
    first, second = create_app(store="lock"), create_app(store="lock")
    assert first is not second
    assert first.extensions["trio_counters"].store is not second.extensions["trio_counters"].store
