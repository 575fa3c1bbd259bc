"""The harness the tests and the benchmarks share, so that each is written once.

- :mod:`.server`   run the real ``hypercorn --worker-class trio`` on a free loopback
  port (the nursery start protocol), read where it listens from its log, stop it
- :mod:`.process`  the worker process behind hypercorn's parent: its pid, RSS, CPU time
- :mod:`.http`     raw HTTP/1.1 over trio sockets: an h11 client, and byte-level
  exchanges for requests no client library would send
- :mod:`.http2`    hand-built HTTP/2 frames and a small h2 client, for hostile h2 requests
- :mod:`.redis`    a real ``redis-server`` for the ``redis`` strategy, on a free port
- :mod:`.checks`   what end-to-end tests check beyond one answer: a witness client
  that keeps asking while others misbehave, a log free of tracebacks, a lone
  error out of an exception group

Everything here targets 127.0.0.1 only, and every wait is bounded.
"""

from __future__ import annotations

from .http import (
    TRANSPORT_ERRORS,
    Connection,
    Outcome,
    Raw,
    RawResponse,
    Reply,
    abort,
    exchange,
    form_post_bytes,
    get_bytes,
    read_until_closed,
    request,
    value_of,
)
from .process import cpu_seconds, rss_kib, worker_pid, worker_pids
from .server import HOST, README_ARGS, Server, ServerError, run_server, serving

__all__ = [
    "HOST",
    "TRANSPORT_ERRORS",
    "RawResponse",
    "form_post_bytes",
    "get_bytes",
    "README_ARGS",
    "Connection",
    "Outcome",
    "Raw",
    "Reply",
    "Server",
    "ServerError",
    "abort",
    "cpu_seconds",
    "exchange",
    "read_until_closed",
    "request",
    "rss_kib",
    "run_server",
    "serving",
    "value_of",
    "worker_pid",
    "worker_pids",
]
