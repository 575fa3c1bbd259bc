"""Settings: keyword-only, with named defaults, each readable from the environment.

An explicit argument to :func:`trio_counters.create_app` wins; otherwise the
``TRIO_COUNTERS_*`` environment variable; otherwise the ``DEFAULT_*`` constant.
That order lets ``hypercorn "trio_counters:create_app(store='channel')"`` pick the
strategy while the other settings still come from the environment.

Every setting is checked before anything is built, with the API's own strictness,
and a value the server cannot run with is a :class:`ConfigError` naming the setting
(and its environment variable, when it came from there) and what it accepts:

- integers: a Python ``int`` (not a ``bool``, not a ``float``); from the environment,
  ASCII digits with an optional sign and nothing else (no ``_``, no inner spaces, no
  ``١٠``), surrounding spaces aside;
- seconds: an ``int`` or a finite ``float``; from the environment, a plain decimal
  number such as ``2.5`` (no exponent, no ``inf``);
- each within its ``*_RANGE`` below, both ends included.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping
from urllib.parse import parse_qsl, urlsplit, urlunsplit

__all__ = [
    "ConfigError",
    "Settings",
    "STRATEGIES",
    "SAFE_STRATEGIES",
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
    "DEFAULT_DATABASE",
    "DEFAULT_DATABASE_SYNC",
    "DATABASE_SYNC_MODES",
    "PIPELINES",
    "DEFAULT_PIPELINE",
    "DEFAULT_GC_THRESHOLD",
    "GC_THRESHOLD_RANGE",
    "INITIAL_COUNTERS",
    "MAX_COUNTERS_RANGE",
    "MAX_NAME_LENGTH_RANGE",
    "INC_CONCURRENCY_RANGE",
    "STORE_TIMEOUT_RANGE",
    "CHANNEL_BUFFER_RANGE",
    "REDIS_TIMEOUT_RANGE",
    "MIN_TIMEOUT",
    "ENVIRONMENT_PREFIX",
    "redact",
]

#: Strategies that keep the table inside the server process: nothing else to run,
#: but each worker process has a table of its own.
IN_PROCESS_STRATEGIES = ("naive", "lock", "channel")
#: Strategies whose table lives in a service shared by every worker and server.
SHARED_STRATEGIES = ("redis",)
#: Every strategy, in the order the README shows them.
STRATEGIES = IN_PROCESS_STRATEGIES + SHARED_STRATEGIES
#: Strategies that never lose an update.
SAFE_STRATEGIES = tuple(strategy for strategy in STRATEGIES if strategy != "naive")

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
#: The SQLite file that keeps the in-process strategies' counts; ``None`` (unset):
#: memory only, gone when the server stops.
DEFAULT_DATABASE: str | None = None
#: How the database reaches the disk: ``full`` fsyncs every commit, so an
#: acknowledged write survives a crash of the machine; ``normal`` (in WAL mode) may
#: lose the last commits before a power loss or OS crash, never to a process crash.
DATABASE_SYNC_MODES = ("full", "normal")
DEFAULT_DATABASE_SYNC = "full"
#: How Quart serves each request: ``lean`` (trio_counters.pipeline: no nursery or
#: second task per request) or ``stock`` (quart-trio's own). The whole suite passes
#: with either (run it with TRIO_COUNTERS_PIPELINE=stock and =lean after a change).
PIPELINES = ("lean", "stock")
DEFAULT_PIPELINE = "lean"
#: Generation 0's threshold for Python's garbage collector while the app serves,
#: after freezing what startup built (trio_counters.collector); 0 leaves the
#: collector as Python set it. Off by default: a 60 s soak with 50,000 grew the
#: worker's RSS 5 % after warm-up against about 1 % without (docs/benchmarks.md),
#: and a default should keep memory flat; it is there to measure and to opt into.
DEFAULT_GC_THRESHOLD = 0
#: Counters that exist at 0 from the start: the seed's ab run hammers ``inc?name=i``
#: without setting it first.
INITIAL_COUNTERS = ("i", "j")

#: Each setting ``x`` is read from the environment variable ``TRIO_COUNTERS_X``.
ENVIRONMENT_PREFIX = "TRIO_COUNTERS_"

# The API's value range; stores.base has it too, but the stores import this module.
_INT64_MAX = 2**63 - 1

#: The shortest timeout, in seconds. A busy worker's scheduling round, and the time
#: its clock takes to notice a deadline, are of the order of a millisecond: a
#: shorter timeout would refuse requests that are merely waiting their turn, and
#: the redis store would take every reply for silence.
MIN_TIMEOUT = 0.01

#: ``max_counters``: room for the initial counters ``i`` and ``j``, up to int64's
#: maximum (what Redis' own counters and the API's values stop at).
MAX_COUNTERS_RANGE = (len(INITIAL_COUNTERS), _INT64_MAX)
#: ``max_name_length``, in characters: a query string or form body over 4096 bytes
#: is refused before a name is read (``app.MAX_QUERY_BYTES``, ``MAX_BODY_BYTES``),
#: so a longer name could never arrive.
MAX_NAME_LENGTH_RANGE = (1, 4096)
#: ``inc_concurrency``: 0 means no limit; more than 100,000 handlers at once is more
#: than one worker has connections for (its file-descriptor limit), so no limit at all.
INC_CONCURRENCY_RANGE = (0, 100_000)
#: ``channel_buffer``: each slot holds one waiting request's command; more slots
#: than requests a worker can have in flight would only hide the backpressure.
CHANNEL_BUFFER_RANGE = (0, 100_000)
#: ``store_timeout``, in seconds: past five minutes a client, proxy or load balancer
#: gave up long ago, and a waiting request only holds memory.
STORE_TIMEOUT_RANGE = (MIN_TIMEOUT, 300.0)
#: ``redis_timeout``, in seconds: the redis store tries Redis once before the
#: server reports ready, for at most ``redis_timeout``; hypercorn gives the whole
#: start 60 s (``startup_timeout``) and waits for it before it heeds a SIGTERM.
REDIS_TIMEOUT_RANGE = (MIN_TIMEOUT, 30.0)
#: ``gc_threshold``: 0 (Python's collector untouched) up to a million allocations
#: between collections, past which a collection would walk more than it saves.
GC_THRESHOLD_RANGE = (0, 1_000_000)

_RANGES: dict[str, tuple[float, float]] = {
    "max_counters": MAX_COUNTERS_RANGE,
    "max_name_length": MAX_NAME_LENGTH_RANGE,
    "inc_concurrency": INC_CONCURRENCY_RANGE,
    "store_timeout": STORE_TIMEOUT_RANGE,
    "channel_buffer": CHANNEL_BUFFER_RANGE,
    "redis_timeout": REDIS_TIMEOUT_RANGE,
    "gc_threshold": GC_THRESHOLD_RANGE,
}

# The API's integer rule (app._INTEGER): an optional sign and ASCII digits; int()
# alone would also take "١٠" and "1_000".
_INTEGER = re.compile(r"[+-]?([0-9]+)")
# Seconds as people write them: no exponent, no inf or nan, no "_".
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_REDIS_SCHEMES = ("redis", "rediss", "unix")
# What a redis_url's query may carry: the database, and rediss:// TLS files and checks.
# The rest (timeouts, noreply, pool sizes) would override what the store relies on.
_REDIS_QUERY = {
    "redis": {"db"},
    "rediss": {"db", "ssl_keyfile", "ssl_certfile", "ssl_ca_certs", "ssl_cert_reqs", "ssl_check_hostname"},
    "unix": {"db"},
}


class ConfigError(ValueError):
    """A setting has a value the server cannot run with."""


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``, fit for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the app is built from, checked: see the module docstring for the rules."""

    store: str = DEFAULT_STORE
    max_counters: int = DEFAULT_MAX_COUNTERS
    max_name_length: int = DEFAULT_MAX_NAME_LENGTH
    inc_concurrency: int = DEFAULT_INC_CONCURRENCY
    store_timeout: float = DEFAULT_STORE_TIMEOUT
    channel_buffer: int = DEFAULT_CHANNEL_BUFFER
    redis_url: str = DEFAULT_REDIS_URL
    redis_timeout: float = DEFAULT_REDIS_TIMEOUT
    database: str | None = DEFAULT_DATABASE
    database_sync: str = DEFAULT_DATABASE_SYNC
    pipeline: str = DEFAULT_PIPELINE
    gc_threshold: int = DEFAULT_GC_THRESHOLD
    #: Which settings came from which environment variable, so that a refusal names
    #: it; :meth:`resolve` fills it in. Not a setting, not kept.
    sources: dataclasses.InitVar[Mapping[str, str] | None] = None

    def __post_init__(self, sources: Mapping[str, str] | None) -> None:
        sources = sources or {}

        def label(name: str) -> str:
            return f"{sources[name]} ({name})" if name in sources else name

        if not isinstance(self.store, str) or self.store not in STRATEGIES:
            raise ConfigError(
                f"{label('store')} must be one of {', '.join(STRATEGIES)}, got {_shown(self.store, str)}"
            )
        for name, (low, high) in _RANGES.items():
            value = getattr(self, name)
            if self.__dataclass_fields__[name].type == "int":
                if not (_is_int(value) and low <= value <= high):
                    raise ConfigError(f"{label(name)} must be {_accepted(name)}, got {_shown(value, int)}")
            else:
                if not (_is_number(value) and low <= value <= high):
                    raise ConfigError(f"{label(name)} must be {_accepted(name)}, got {_shown(value, float)}")
                object.__setattr__(self, name, float(value))
        if not isinstance(self.redis_url, str):
            raise ConfigError(f"{label('redis_url')} must be a URL, got {_shown(self.redis_url, str)}")
        _check_redis_url(label("redis_url"), self.redis_url)
        _check_database(label, self.store, self.database, self.database_sync)
        if not isinstance(self.pipeline, str) or self.pipeline not in PIPELINES:
            raise ConfigError(
                f"{label('pipeline')} must be one of {', '.join(PIPELINES)}, got {_shown(self.pipeline, str)}"
            )
        if self.store == "redis" and self.redis_timeout >= self.store_timeout:
            # The store notices Redis' silence whoever waits (stores/redis_pipeline.py),
            # but a request reports it only if it waits long enough to see it.
            raise ConfigError(
                f"{label('redis_timeout')} must be below {label('store_timeout')} with the "
                f"redis store, got {self.redis_timeout:g} s against {self.store_timeout:g} s: "
                "a request gives up at store_timeout, so it would answer a bare timeout "
                "where Redis is stalled"
            )

    @classmethod
    def resolve(cls, environ: Mapping[str, str] | None = None, **given: object) -> Settings:
        """Build settings from explicit values, then ``environ``, then the defaults.

        ``None`` in ``given`` means "not given"; a blank variable means "not set".
        """
        environ = os.environ if environ is None else environ
        unknown = set(given) - {field.name for field in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        values: dict[str, object] = {}
        sources: dict[str, str] = {}
        for field in dataclasses.fields(cls):
            if given.get(field.name) is not None:
                values[field.name] = given[field.name]
                continue
            variable = ENVIRONMENT_PREFIX + field.name.upper()
            raw = environ.get(variable)
            if raw is None or raw.strip() == "":
                continue
            values[field.name] = _parse(field.name, field.type, raw.strip(), variable)
            sources[field.name] = variable
        return cls(**values, sources=sources)  # type: ignore[arg-type]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def _accepted(name: str) -> str:
    """What a numeric setting accepts, as the messages say it."""
    low, high = _RANGES[name]
    if isinstance(low, int):
        return f"an integer from {low} to {high}"
    return f"a number of seconds from {low:g} to {high:g}"


def _shown(value: object, expected: type) -> str:
    """``value`` for a message: its repr, cut short, and its type if that is wrong."""
    text = repr(value)
    if len(text) > 60:
        text = f"{text[:50]}... ({len(text)} characters)"
    if type(value) is expected or (expected is float and _is_int(value)):
        return text
    kind = type(value).__name__
    return f"{text} ({'an' if kind[0] in 'aeiou' else 'a'} {kind})"


def _parse(name: str, kind: str, raw: str, variable: str) -> object:
    """An environment variable's text as the setting's type, by the API's rules."""
    where = f"{variable} ({name})"
    if kind == "int":
        match = _INTEGER.fullmatch(raw)
        # Past 19 significant digits it is out of every range; checking first also
        # spares int() a huge conversion.
        if match is None or len(match[1].lstrip("0")) > 19:
            hint = "" if match else " (ASCII digits and an optional sign)"
            raise ConfigError(f"{where} must be {_accepted(name)}{hint}, got {_shown(raw, str)}")
        return int(raw)
    if kind == "float":
        if _DECIMAL.fullmatch(raw) is None:
            raise ConfigError(
                f"{where} must be {_accepted(name)} (a plain decimal such as 2.5), got {_shown(raw, str)}"
            )
        return float(raw)
    return raw


def _check_database(label: Callable[[str], str], store: str, database: object, sync: object) -> None:
    """A path SQLite will be given as it is, and a store that keeps its counts in a process."""
    if not isinstance(sync, str) or sync not in DATABASE_SYNC_MODES:
        raise ConfigError(
            f"{label('database_sync')} must be one of {', '.join(DATABASE_SYNC_MODES)}, got {_shown(sync, str)}"
        )
    if database is None:
        return
    if not isinstance(database, str) or not database or "\x00" in database:
        raise ConfigError(f"{label('database')} must be the path of a file, got {_shown(database, str)}")
    if database == ":memory:":
        raise ConfigError(
            f"{label('database')} names a file; to keep the counts in memory only, leave it unset"
        )
    if store in SHARED_STRATEGIES:
        raise ConfigError(
            f"{label('database')} is a file for the naive, lock and channel stores, which keep "
            f"their counts in one process; the {store} store ({label('store')}) keeps its counts "
            f"in {store.capitalize()}: use one or the other"
        )


def _check_redis_url(where: str, url: str) -> None:
    """The URL's scheme, host, port and database, checked before anything connects.

    Only the form of the database is checked (a non-negative integer): how many a
    Redis has is its own configuration (``databases``, 16 by default), and Redis'
    own refusal, ``DB index is out of range``, is reported as it is.
    """
    shown = redact(url)
    parts = urlsplit(url)
    if parts.scheme not in _REDIS_SCHEMES:
        raise ConfigError(f"{where} must start with redis://, rediss:// or unix://, got {shown!r}")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme != "unix":
        if not parts.hostname:
            raise ConfigError(f"{where} names no host, as in redis://127.0.0.1:6379/0, got {shown!r}")
        if port is not None and not 1 <= port <= 65535:
            raise ConfigError(f"{where} must have a port from 1 to 65535, got {shown!r}")
    elif not parts.path:
        raise ConfigError(f"{where} names no socket, as in unix:///run/redis.sock, got {shown!r}")
    databases = []
    if parts.scheme != "unix" and parts.path not in ("", "/"):
        databases.append(parts.path[1:])
    allowed = _REDIS_QUERY[parts.scheme]
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in allowed:
            raise ConfigError(
                f"{where} may carry only {', '.join(sorted(allowed))} in its query, got {key!r} in {shown!r}"
            )
        if key == "db":
            databases.append(value)
    for database in databases:
        if not (database.isascii() and database.isdigit() and len(database) <= 19):
            raise ConfigError(
                f"{where} must name its database as a non-negative integer (redis://host:6379/0), "
                f"got {shown!r}"
            )
