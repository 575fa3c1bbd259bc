"""The lean request pipeline: less per-request work in QuartTrio, through Quart's own
extension points.

:func:`install` sets two attributes of a QuartTrio app:

* ``asgi_http_class``: :class:`~.connection.LeanHTTPConnection`. A request runs
  in the task hypercorn already started for it, with no nursery and no second
  task (on the fast transport; elsewhere with one watching task), its
  disconnect still noticed until its answer starts;
* ``request_class``: :class:`~.request.LeanRequest`, quart-trio's request without
  an ``import`` per ``blueprints`` read or an exception per absent header
  looked up -- if the app still has quart-trio's own (an app's own request class
  is left alone).

Handlers, ``request``, error handlers, ``before_serving`` / ``after_serving`` and
``app.nursery`` are Quart's own, untouched; no Quart module is patched.

The subclasses override quart-trio methods and read Quart attributes by name, so
they are installed only on :data:`CHECKED_QUART_VERSION` and
:data:`CHECKED_QUART_TRIO_VERSION`; on any other version the app keeps Quart's
own pipeline and a :class:`PipelineFallbackWarning` is issued, once per process.

Setting: ``pipeline`` (``TRIO_COUNTERS_PIPELINE``), ``lean`` or ``stock`` (default
``lean``, :data:`trio_counters.config.DEFAULT_PIPELINE`). What it saves and why:
docs/framework.md.
"""

from __future__ import annotations

import importlib.metadata
import warnings
from typing import Any

from quart_trio import QuartTrio
from quart_trio.asgi import TrioASGIHTTPConnection
from quart_trio.wrappers import TrioRequest

from .connection import LeanHTTPConnection
from .request import LeanRequest

__all__ = [
    "CHECKED_QUART_VERSION",
    "CHECKED_QUART_TRIO_VERSION",
    "LeanHTTPConnection",
    "LeanRequest",
    "PipelineFallbackWarning",
    "active",
    "incompatibility",
    "install",
]

#: The Quart and quart-trio releases the subclasses were read against and tested with.
CHECKED_QUART_VERSION = "0.22.0"
CHECKED_QUART_TRIO_VERSION = "0.12.0"

# What the subclasses rely on, by name: checked before they are installed.
_REQUIRED_CONNECTION = ("_create_request_from_scope", "_send_response", "handle_messages")
_REQUIRED_APP = ("handle_request", "asgi_http_class")

_warned = False


class PipelineFallbackWarning(RuntimeWarning):
    """The lean pipeline could not be used; Quart's own serves the app."""


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def incompatibility() -> str | None:
    """Why the lean pipeline cannot be used here, or None if it can."""
    for package, checked in (("quart", CHECKED_QUART_VERSION), ("quart-trio", CHECKED_QUART_TRIO_VERSION)):
        version = _version(package)
        if version != checked:
            found = f"is {version}" if version else "has no readable version"
            return f"{package} {found}; the lean pipeline was checked against {checked} only"
    missing = [name for name in _REQUIRED_CONNECTION if not callable(getattr(TrioASGIHTTPConnection, name, None))]
    missing += [name for name in _REQUIRED_APP if not hasattr(QuartTrio, name)]
    if missing:
        return f"quart-trio lacks {', '.join(missing)}"
    return None


def install(app: QuartTrio, enabled: bool = True) -> bool:
    """Serve ``app`` through the lean pipeline (or, if not ``enabled``, Quart's own).

    Returns whether the lean pipeline is now installed. On a Quart or quart-trio
    other than the checked ones the app keeps Quart's pipeline, and a
    :class:`PipelineFallbackWarning` is issued, once per process.
    """
    global _warned
    problem = incompatibility() if enabled else None
    if problem is not None and not _warned:
        _warned = True
        warnings.warn(
            f"trio_counters: Quart's own request pipeline serves: {problem}",
            PipelineFallbackWarning,
            stacklevel=2,
        )
    if not enabled or problem is not None:
        app.asgi_http_class = type(app).asgi_http_class
        if app.request_class is LeanRequest:
            app.request_class = TrioRequest
        return False
    app.asgi_http_class = LeanHTTPConnection
    if app.request_class is TrioRequest:
        app.request_class = LeanRequest
    return True


def active(app: Any) -> str:
    """``"lean"`` if ``app`` serves through the lean pipeline, else ``"stock"``."""
    return "lean" if getattr(app, "asgi_http_class", None) is LeanHTTPConnection else "stock"
