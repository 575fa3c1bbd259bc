"""Settings: an explicit argument wins, then TRIO_COUNTERS_*, then the default."""

from __future__ import annotations

import pytest

from trio_counters import ConfigError, Settings, create_app
from trio_counters.config import DEFAULT_MAX_COUNTERS, DEFAULT_STORE


def test_defaults_apply_when_nothing_is_given() -> None:
    settings = Settings.resolve({})
    assert (settings.store, settings.max_counters) == (DEFAULT_STORE, DEFAULT_MAX_COUNTERS)


def test_environment_fills_what_is_not_given_and_arguments_win() -> None:
    environ = {"TRIO_COUNTERS_STORE": "naive", "TRIO_COUNTERS_MAX_COUNTERS": " 50 "}
    assert Settings.resolve(environ).store == "naive"
    settings = Settings.resolve(environ, store="channel")
    assert (settings.store, settings.max_counters) == ("channel", 50)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"TRIO_COUNTERS_STORE": "mutex"}, "unknown store 'mutex': choose one of naive, lock, channel"),
        ({"TRIO_COUNTERS_MAX_COUNTERS": "lots"}, "TRIO_COUNTERS_MAX_COUNTERS='lots' is not a valid int"),
        ({"TRIO_COUNTERS_MAX_COUNTERS": "1"}, "max_counters must be at least 2, got 1"),
        ({"TRIO_COUNTERS_STORE_TIMEOUT": "0"}, "store_timeout must be above 0 seconds, got 0.0"),
        ({"TRIO_COUNTERS_INC_CONCURRENCY": "-1"}, "inc_concurrency must be at least 0, got -1"),
    ],
)
def test_bad_settings_are_refused_with_a_clear_message(environ: dict, message: str) -> None:
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        Settings.resolve(environ)


def test_create_app_refuses_a_counter_limit_without_room_for_i_and_j() -> None:
    with pytest.raises(ConfigError, match="max_counters must be at least 2"):
        create_app(max_counters=1)


def test_unknown_keyword_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        create_app(stor="lock")  # type: ignore[call-arg]


def test_each_call_builds_a_fresh_app_with_its_own_store() -> None:
    first, second = create_app(store="lock"), create_app(store="lock")
    assert first is not second
    assert first.extensions["trio_counters"].store is not second.extensions["trio_counters"].store
