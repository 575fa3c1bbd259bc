"""The HTTP layer: the app factory, the endpoints, and the error mapping.

Every body is one line of ``text/plain; charset=utf-8`` ending in ``\\n``
(:mod:`trio_counters.responses`). Input is checked before the store is asked
(:mod:`trio_counters.params`), so a refused request changes nothing. Store errors
become status codes in one place, :data:`STATUS_FOR`.
"""

from __future__ import annotations

import json
from functools import partial
from itertools import chain
from typing import Any

import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from quart import request
from quart_trio import QuartTrio
from werkzeug.exceptions import (
    HTTPException,
    MethodNotAllowed,
    NotFound,
    RequestHeaderFieldsTooLarge,
    RequestURITooLarge,
)

from . import collector
from .config import INITIAL_COUNTERS, Settings
from .errors import (
    CounterCorrupt,
    CounterNotFound,
    CounterOverflow,
    StoreError,
    StoreMisconfigured,
    StoreUnavailable,
    TooManyCounters,
)
from .gate import Gate
from .metrics import RequestRecorder, StoreCollector, stats_document
from .params import counter_name, counter_value, read_params
from .pipeline import install as install_pipeline
from .responses import TextResponse, text
from .shared_timeout import SharedTimeout
from .stores import CounterStore, DatabaseUnusable, make_store

__all__ = [
    "CounterApp",
    "create_app",
    "STATUS_FOR",
    "MAX_BODY_BYTES",
    "MAX_QUERY_BYTES",
    "MAX_HEADER_BYTES",
    "BODY_TIMEOUT",
    "ALLOWED_METHODS",
]

#: The HTTP status of every store error, in one place. Only 503 carries
#: ``Retry-After``: it is the one refusal that trying again may cure.
STATUS_FOR: dict[type[StoreError], int] = {
    CounterNotFound: 404,
    CounterOverflow: 409,
    # 409 Conflict: the counter's current state refuses the request, and the client
    # can resolve it, as RFC 9110 says 409 is for: /set replaces the value.
    CounterCorrupt: 409,
    TooManyCounters: 507,
    # 500: the server's own setup is at fault, not the request; no retry will help.
    StoreMisconfigured: 500,
    StoreUnavailable: 503,
}

#: A POST form only ever needs ``name`` and ``val``; anything larger is refused (413).
MAX_BODY_BYTES = 4096
#: The same bound for the query string; anything longer is refused (414).
MAX_QUERY_BYTES = 4096
#: Header names and values together, as hypercorn means to bound them: it refuses a
#: head still unfinished after 16 KiB (``h11_max_incomplete_size``), but a complete
#: head of up to 64 KiB that arrives in one read gets through; refused here (431).
MAX_HEADER_BYTES = 16 * 1024
#: Seconds a client may take to send a POST body before it gets 408.
BODY_TIMEOUT = 10
#: The methods each endpoint takes, as its 405's ``Allow`` header says them. HEAD is
#: safe to link checkers, monitors and proxies, so only the endpoints that change
#: nothing take it (werkzeug would add it to every GET route).
ALLOWED_METHODS: dict[str, tuple[str, ...]] = {
    "/get": ("GET", "HEAD"),
    "/set": ("GET", "POST"),
    "/inc": ("GET", "POST"),
    "/stats": ("GET", "HEAD"),
    "/metrics": ("GET", "HEAD"),
}


class CounterApp(QuartTrio):
    """QuartTrio, but for the log of a start the store refused.

    A database file the store cannot use is logged by the store in one line that
    says why (docs/durable.md); Quart would log it again with a 40-line traceback.
    """

    def log_exception(self, exception_info: Any) -> None:
        if isinstance(exception_info[1], DatabaseUnusable):
            return
        super().log_exception(exception_info)


def create_app(
    *,
    store: str | None = None,
    max_counters: int | None = None,
    max_name_length: int | None = None,
    inc_concurrency: int | None = None,
    store_timeout: float | None = None,
    channel_buffer: int | None = None,
    redis_url: str | None = None,
    redis_timeout: float | None = None,
    database: str | None = None,
    database_sync: str | None = None,
    pipeline: str | None = None,
    gc_threshold: int | None = None,
) -> CounterApp:
    """Build a fresh counter app with its own store.

    Each argument left as ``None`` comes from its ``TRIO_COUNTERS_*`` environment
    variable, else from its ``DEFAULT_*`` constant in :mod:`trio_counters.config`.
    """
    settings = Settings.resolve(
        store=store,
        max_counters=max_counters,
        max_name_length=max_name_length,
        inc_concurrency=inc_concurrency,
        store_timeout=store_timeout,
        channel_buffer=channel_buffer,
        redis_url=redis_url,
        redis_timeout=redis_timeout,
        database=database,
        database_sync=database_sync,
        pipeline=pipeline,
        gc_threshold=gc_threshold,
    )
    counters = make_store(
        settings.store,
        max_counters=settings.max_counters,
        initial=INITIAL_COUNTERS,
        channel_buffer=settings.channel_buffer,
        redis_url=settings.redis_url,
        redis_timeout=settings.redis_timeout,
        database=settings.database,
        database_sync=settings.database_sync,
    )
    inc_limiter = trio.CapacityLimiter(settings.inc_concurrency) if settings.inc_concurrency else None

    app = CounterApp("trio_counters", static_folder=None)  # the API serves no files
    lean = install_pipeline(app, settings.pipeline == "lean")  # trio_counters/pipeline/
    app.response_class = TextResponse
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config["BODY_TIMEOUT"] = BODY_TIMEOUT
    # No automatic OPTIONS answers (an empty body): OPTIONS is a 405 like any
    # method a route does not take. Read as each route below is added.
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    registry = CollectorRegistry()
    recorder = RequestRecorder(registry)
    registry.register(StoreCollector(counters, recorder, inc_limiter))
    app.extensions["trio_counters"] = _AppState(settings, counters, inc_limiter)
    # The one middleware: the UTF-8 query check, the accounting, and -- under
    # quart-trio's own pipeline -- the close defect's fix (trio_counters/gate.py).
    app.asgi_app = Gate(app.asgi_app, recorder, complete_sends=not lean)  # type: ignore[method-assign]
    app.logger  # noqa: B018 -- sets up Quart's log handler, which our modules' loggers reach

    max_name_length = settings.max_name_length
    too_slow = f"the store did not answer within {settings.store_timeout:g} s; try again"
    # Every store call waits at most store_timeout, timed by one watchdog task: ask()
    # calls the store, or raises StoreUnavailable rather than wait past the timeout.
    timeout = SharedTimeout(settings.store_timeout, partial(StoreUnavailable, too_slow))
    ask = timeout.call

    @app.before_serving
    async def start_store() -> None:
        await app.nursery.start(counters.serve)
        await app.nursery.start(timeout.watch)

    @app.after_serving
    async def stop_store() -> None:
        counters.close()
        timeout.close()

    @app.before_serving
    async def tune_garbage_collection() -> None:  # last: once everything is built
        collector.serving_started(settings.gc_threshold)

    @app.after_serving
    async def restore_garbage_collection() -> None:
        collector.serving_stopped(settings.gc_threshold)

    @app.before_request
    async def refuse_oversized_requests_and_unsafe_heads() -> None:
        current = request._get_current_object()  # one lookup through the proxy, not four
        allowed = ALLOWED_METHODS.get(current.path)
        if allowed is not None and current.method not in allowed:
            raise MethodNotAllowed(valid_methods=allowed)  # HEAD on /set or /inc
        if len(current.query_string) > MAX_QUERY_BYTES:
            raise RequestURITooLarge(f"query string over {MAX_QUERY_BYTES} bytes")
        # Names and values, as request.headers holds them (Remote-Addr included):
        # summed in C, a name-value pair at a time.
        if sum(map(len, chain.from_iterable(current.headers))) > MAX_HEADER_BYTES:
            raise RequestHeaderFieldsTooLarge(f"request headers over {MAX_HEADER_BYTES} bytes")

    @app.route("/get", methods=ALLOWED_METHODS["/get"])
    async def get_counter() -> str:
        name = counter_name(await read_params(), max_name_length)
        value = await ask(counters.get, name)
        return f"{name}: {value}\n"

    @app.route("/set", methods=ALLOWED_METHODS["/set"])
    async def set_counter() -> str:
        params = await read_params()
        name = counter_name(params, max_name_length)
        value = counter_value(params)
        await ask(counters.set, name, value)
        return "ok\n"

    async def limited_inc(name: str) -> None:
        async with inc_limiter:  # type: ignore[union-attr]
            await counters.inc(name)

    # The wait for the limiter, if there is one, counts against the timeout too.
    inc = counters.inc if inc_limiter is None else limited_inc

    @app.route("/inc", methods=ALLOWED_METHODS["/inc"])
    async def inc_counter() -> str:
        name = counter_name(await read_params(), max_name_length)
        await ask(inc, name)
        return "ok\n"

    @app.route("/stats", methods=ALLOWED_METHODS["/stats"])
    async def stats() -> TextResponse:
        document = stats_document(counters, recorder, inc_limiter)
        return TextResponse(
            json.dumps(document, separators=(",", ":")) + "\n", content_type="application/json"
        )

    @app.route("/metrics", methods=ALLOWED_METHODS["/metrics"])
    async def metrics() -> TextResponse:
        return TextResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

    @app.errorhandler(StoreError)
    async def store_error(error: StoreError) -> TextResponse:
        response = text(str(error), STATUS_FOR[type(error)])
        if isinstance(error, StoreUnavailable):
            response.headers["Retry-After"] = "1"
        return response

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> TextResponse:
        status = error.code or 500
        if isinstance(error, NotFound):
            message = "not found: the endpoints are /get, /set, /inc, /stats and /metrics"
        elif isinstance(error, MethodNotAllowed):
            allowed = ", ".join(ALLOWED_METHODS.get(request.path, sorted(error.valid_methods or ())))
            message = f"method {request.method} not allowed here; use {allowed}"
        elif status == 500:
            message = "internal server error"
        else:
            message = str(error.description).replace("\n", " ")
        response = text(message, status)
        if isinstance(error, MethodNotAllowed):
            response.headers["Allow"] = allowed
        return response

    return app


class _AppState:
    """What an app was built with, kept in ``app.extensions["trio_counters"]``."""

    def __init__(
        self, settings: Settings, store: CounterStore, inc_limiter: trio.CapacityLimiter | None
    ) -> None:
        self.settings = settings
        self.store = store
        self.inc_limiter = inc_limiter
