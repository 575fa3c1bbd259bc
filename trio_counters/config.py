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
    "IN_PROCESS_STRATEGIES",
    "SHARED_STRATEGIES",
    "DEFAULT_STORE",
    "DEFAULT_MAX_COUNTERS",
    "DEFAULT_MAX_NAME_LENGTH",
    "DEFAULT_INC_CONCURRENCY",
    "DEFAULT_STORE_TIMEOUT",
    "DEFAULT_CHANNEL_BUFFER",
    "DEFAULT_REDIS_URL",
    "DEFAULT_REDIS_TIMEOUT",
    "INITIAL_COUNTERS",
]

#: Strategies that keep the table inside the server process: nothing else to run,
#: but each worker process has a table of its own.
IN_PROCESS_STRATEGIES = ("naive", "lock", "channel")
#: Strategies whose table lives in a service shared by every worker and server.
SHARED_STRATEGIES = ("redis",)
#: Every strategy, in the order the README shows them.
STRATEGIES = IN_PROCESS_STRATEGIES + SHARED_STRATEGIES

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
#: Where the redis strategy keeps its table (one hash in this database).
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
#: Seconds the redis strategy waits to connect to Redis or for its answer before
#: the request gets 503; Redis answers in well under a millisecond.
DEFAULT_REDIS_TIMEOUT = 1.0
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
    redis_url: str = DEFAULT_REDIS_URL
    redis_timeout: float = DEFAULT_REDIS_TIMEOUT

    def __post_init__(self) -> None:
        if self.store not in STRATEGIES:
            raise ConfigError(
                f"unknown store {self.store!r}: choose one of {', '.join(STRATEGIES)}"
            )
        for field, minimum in (
            ("max_counters", len(INITIAL_COUNTERS)),  # room for i and j
            ("max_name_length", 1),
            ("inc_concurrency", 0),
            ("channel_buffer", 0),
        ):
            if getattr(self, field) < minimum:
                raise ConfigError(f"{field} must be at least {minimum}, got {getattr(self, field)}")
        for field in ("store_timeout", "redis_timeout"):
            if not getattr(self, field) > 0:
                raise ConfigError(f"{field} must be above 0 seconds, got {getattr(self, field)}")
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(
                f"redis_url must start with redis://, rediss:// or unix://, got {self.redis_url!r}"
            )

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
