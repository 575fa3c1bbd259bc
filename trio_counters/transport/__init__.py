"""The trio transports for hypercorn's worker: the setting, the version pin, the install.

:func:`install` replaces hypercorn's trio ``TCPServer`` (``hypercorn.trio.run.TCPServer``,
which ``worker_serve`` looks up by name) with :class:`FastTCPServer`, or with
:class:`GuardedTCPServer` -- hypercorn's own connection handling, guarded so that
no connection can end the worker -- and hypercorn's ``worker_serve`` (looked up by
name in ``trio_worker``) with :func:`~trio_counters.transport.run.worker_serve`,
which handles SIGTERM and Ctrl-C when hypercorn serves in its own process
(``--workers 0``) and, with the fast transport, serves with a copy of hypercorn's
that accepts every waiting connection in one turn (:mod:`.worker`). Both lean on hypercorn's private internals, so they are
installed only on :data:`CHECKED_HYPERCORN_VERSION` with every internal they
need present; otherwise hypercorn is left alone, unguarded, and a
:class:`TransportFallbackWarning` is issued, once per process -- the server
always runs. :func:`active` says which transport serves.

Setting: ``TRIO_COUNTERS_TRANSPORT=fast`` or ``stock`` (default:
:data:`DEFAULT_TRANSPORT`), read by :func:`install_from_environ` when
:mod:`trio_counters` is imported -- in hypercorn's worker process, since that is
where the app is imported. What the fast transport changes, and what upstream
changes would retire it: docs/transport.md.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import logging
import os
import warnings
from typing import Any

from ..config import ConfigError
from .guarded import GuardedTCPServer
from .hypercorn_internals import (
    IMPORT_ERROR as _IMPORT_ERROR,
    H2Protocol as _H2Protocol,
    H11Protocol as _H11Protocol,
    StockTaskGroup as _StockTaskGroup,
    StockTCPServer as _StockTCPServer,
    run_module as _run_module,
)
from .run import stock_worker_serve as _stock_worker_serve, worker_serve as _worker_serve
from .tcp_server import FastTCPServer

__all__ = [
    "CHECKED_HYPERCORN_VERSION",
    "ENVIRONMENT_VARIABLE",
    "FastTCPServer",
    "GuardedTCPServer",
    "TransportFallbackWarning",
    "active",
    "install",
    "install_from_environ",
]

#: The one hypercorn release the subclass was read against and tested with.
CHECKED_HYPERCORN_VERSION = "0.18.0"
#: ``fast`` or ``stock``.
ENVIRONMENT_VARIABLE = "TRIO_COUNTERS_TRANSPORT"
#: On by default: the whole test suite, end-to-end tests included, passes with
#: TRIO_COUNTERS_TRANSPORT=stock and with =fast (run it both ways after a change).
DEFAULT_TRANSPORT = "fast"
TRANSPORTS = ("fast", "stock")

log = logging.getLogger(__name__)


class TransportFallbackWarning(RuntimeWarning):
    """This package's transports could not be used; hypercorn's own, unguarded, is serving."""


# What the subclass relies on, by name: checked before it is installed.
_REQUIRED_METHODS = ("run", "protocol_send", "_read_data", "_close", "_initiate_server_close")
_REQUIRED_CONFIG = ("keep_alive_timeout", "read_timeout", "ssl_handshake_timeout")
_REQUIRED_INIT = ["self", "app", "config", "context", "state", "stream"]
_REQUIRED_PROTOCOL_METHODS = {
    _H11Protocol: ("handle", "_check_protocol", "_create_stream", "_close_stream", "_send_h11_event"),
    _H2Protocol: ("initiate", "handle", "_handle_events", "_flush", "send_task"),
}
_REQUIRED_WORKER_SERVE = ["app", "config", "sockets", "shutdown_trigger", "task_status"]
# What transport/worker.py's copy of worker_serve takes from hypercorn's module.
_REQUIRED_RUN_NAMES = (
    "StatsdLogger", "Lifespan", "WorkerContext", "UDPServer", "ConnectionState",
    "raise_shutdown", "repr_socket_addr", "ShutdownError",
)  # fmt: skip

_stock_tcp_server: Any = None
_warned = False


def _hypercorn_version() -> str:
    return importlib.metadata.version("hypercorn")


def _incompatibility() -> str | None:
    """Why the fast transport cannot be used here, or None if it can."""
    if _IMPORT_ERROR is not None:
        return f"a hypercorn internal it needs is missing ({_IMPORT_ERROR})"
    try:
        version = _hypercorn_version()
    except importlib.metadata.PackageNotFoundError:
        return "hypercorn's version cannot be read"
    if version != CHECKED_HYPERCORN_VERSION:
        return f"hypercorn is {version}; it was checked against {CHECKED_HYPERCORN_VERSION} only"
    stock = _stock_tcp_server if _stock_tcp_server is not None else _StockTCPServer
    if not isinstance(getattr(_run_module, "TCPServer", None), type):
        return "hypercorn.trio.run has no TCPServer class to replace"
    missing = [name for name in _REQUIRED_METHODS if not callable(getattr(stock, name, None))]
    if missing:
        return f"hypercorn's trio TCPServer lacks {', '.join(missing)}"
    try:
        parameters = list(inspect.signature(stock.__init__).parameters)
    except (TypeError, ValueError):
        parameters = []
    if parameters != _REQUIRED_INIT:
        return f"hypercorn's trio TCPServer takes ({', '.join(parameters)}), not the expected"
    from hypercorn.config import Config

    missing = [name for name in _REQUIRED_CONFIG if not hasattr(Config, name)]
    if missing:
        return f"hypercorn's Config lacks {', '.join(missing)}"
    if not callable(getattr(_StockTaskGroup, "spawn", None)):
        return "hypercorn's trio TaskGroup lacks spawn"
    for protocol, names in _REQUIRED_PROTOCOL_METHODS.items():
        missing = [name for name in names if not callable(getattr(protocol, name, None))]
        if missing:
            return f"hypercorn's {protocol.__name__} lacks {', '.join(missing)}"
    try:
        parameters = list(inspect.signature(_stock_worker_serve).parameters)
    except (TypeError, ValueError):
        parameters = []
    if parameters != _REQUIRED_WORKER_SERVE:
        return f"hypercorn's trio worker_serve takes ({', '.join(parameters)}), not the expected"
    missing = [name for name in _REQUIRED_RUN_NAMES if not hasattr(_run_module, name)]
    if missing:
        return f"hypercorn.trio.run lacks {', '.join(missing)}"
    return None


def install(enabled: bool = True) -> bool:
    """Make hypercorn's trio worker use :class:`FastTCPServer` (or, if not enabled,
    :class:`GuardedTCPServer`) and this package's ``worker_serve``.

    Returns whether the fast transport is now installed. If this hypercorn is not
    the checked one, hypercorn is left as it is (its own transport, unguarded) and a
    :class:`TransportFallbackWarning` is issued, once per process.
    """
    global _stock_tcp_server, _warned
    if _IMPORT_ERROR is None and _stock_tcp_server is None:
        current = getattr(_run_module, "TCPServer", None)
        ours = current in (FastTCPServer, GuardedTCPServer)
        _stock_tcp_server = _StockTCPServer if ours else current
    problem = _incompatibility()
    if problem is not None:
        if _IMPORT_ERROR is None and _stock_tcp_server is not None:
            _run_module.TCPServer = _stock_tcp_server
            if _stock_worker_serve is not None:
                _run_module.worker_serve = _stock_worker_serve
        if not _warned:
            _warned = True
            warnings.warn(
                f"trio_counters: hypercorn's own trio transport serves, without this "
                f"package's guards: {problem}",
                TransportFallbackWarning,
                stacklevel=2,
            )
        return False
    _run_module.TCPServer = FastTCPServer if enabled else GuardedTCPServer
    _run_module.worker_serve = _worker_serve
    log.debug("%s trio transport installed in hypercorn.trio.run", active())
    return enabled


def active() -> str:
    """``"fast"`` if hypercorn's trio worker will use :class:`FastTCPServer`, else ``"stock"``
    (:class:`GuardedTCPServer`, or hypercorn's own after a fallback)."""
    if _IMPORT_ERROR is None and getattr(_run_module, "TCPServer", None) is FastTCPServer:
        return "fast"
    return "stock"


def install_from_environ(environ: Any = None) -> bool:
    """Install the transport named by ``TRIO_COUNTERS_TRANSPORT`` (default ``fast``)."""
    environ = os.environ if environ is None else environ
    raw = environ.get(ENVIRONMENT_VARIABLE, "")
    choice = raw.strip().lower() or DEFAULT_TRANSPORT
    if choice not in TRANSPORTS:
        raise ConfigError(f"{ENVIRONMENT_VARIABLE}={raw!r}: choose fast or stock")
    return install(choice == "fast")
