"""Settings: keyword-only, with named defaults, each readable from the environment.

An explicit argument to :func:`trio_counters.create_app` wins; otherwise the
``TRIO_COUNTERS_*`` environment variable; otherwise the ``DEFAULT_*`` constant.
That order lets ``hypercorn "trio_counters:create_app(store='channel')"`` pick the
strategy while the other settings still come from the environment.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

__all__ = [
    "ConfigError",
    "Settings",
    "STRATEGIES",
    "DEFAULT_STORE",
    "DEFAULT_MAX_COUNTERS",
    "DEFAULT_MAX_NAME_LENGTH",
    "DEFAULT_INC_CONCURRENCY",
    "DEFAULT_STORE_TIMEOUT",
    "DEFAULT_CHANNEL_BUFFER",
    "INITIAL_COUNTERS",
]

#: The user-facing strategies, in the order the README and bench.py show them.
STRATEGIES = ("naive", "lock", "channel")

DEFAULT_STORE = "lock"
#: Bounds memory: about 1,000,000 small counters fit in a few hundred MB.
DEFAULT_MAX_COUNTERS = 1_000_000
DEFAULT_MAX_NAME_LENGTH = 256
#: How many /inc handlers may run at once; 0 means no limit.
DEFAULT_INC_CONCURRENCY = 0
#: Seconds a request may wait for the store before it gets 503 instead of hanging.
DEFAULT_STORE_TIMEOUT = 10.0
#: Slots in the channel manager's command channel; 0 is a rendezvous, like Go's
#: unbuffered ``chan`` in the seed.
DEFAULT_CHANNEL_BUFFER = 0
#: Counters that exist at 0 from the start: the seed's ab run hammers ``inc?name=i``
#: without setting it first.
INITIAL_COUNTERS = ("i", "j")


class ConfigError(ValueError):
    """A setting has a value the server cannot run with."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the app is built from."""

    store: str = DEFAULT_STORE
    max_counters: int = DEFAULT_MAX_COUNTERS
    max_name_length: int = DEFAULT_MAX_NAME_LENGTH
    inc_concurrency: int = DEFAULT_INC_CONCURRENCY
    store_timeout: float = DEFAULT_STORE_TIMEOUT
    channel_buffer: int = DEFAULT_CHANNEL_BUFFER

    def __post_init__(self) -> None:
        if self.store not in STRATEGIES:
            raise ConfigError(
                f"unknown store {self.store!r}: choose one of {', '.join(STRATEGIES)}"
            )
        for field, minimum in (
            ("max_counters", 1),
            ("max_name_length", 1),
            ("inc_concurrency", 0),
            ("channel_buffer", 0),
        ):
            if getattr(self, field) < minimum:
                raise ConfigError(f"{field} must be at least {minimum}, got {getattr(self, field)}")
        if not self.store_timeout > 0:
            raise ConfigError(f"store_timeout must be above 0 seconds, got {self.store_timeout}")

    @classmethod
    def resolve(cls, environ: Mapping[str, str] | None = None, **given: object) -> Settings:
        """Build settings from explicit values, then ``environ``, then the defaults.

        ``None`` in ``given`` means "not given".
        """
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            if given.get(field.name) is not None:
                values[field.name] = given[field.name]
                continue
            variable = "TRIO_COUNTERS_" + field.name.upper()
            raw = environ.get(variable)
            if raw is None or raw.strip() == "":
                continue
            convert = {"str": str, "int": int, "float": float}[field.type]
            try:
                values[field.name] = convert(raw.strip())
            except ValueError:
                raise ConfigError(f"{variable}={raw!r} is not a valid {field.type}") from None
        unknown = set(given) - {field.name for field in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return cls(**values)
