"""The reference apps as hypercorn's worker loads them: on trio_counters' transport,
and, for the plain QuartTrio app, on the request pipeline the environment names.

``hypercorn --worker-class trio 'benchmarks.reference:served("bare")'`` (from the
repository root) serves ``benchmarks.bare_asgi``'s unguarded counter; ``"bare+lock"``
its lock-guarded one; ``"plain"`` ``benchmarks.plain_quart``'s app. Before it
returns the app, :func:`served` installs the transport ``TRIO_COUNTERS_TRANSPORT``
names (``fast`` by default), as ``import trio_counters`` does for trio_counters'
own app, so that a reference row runs on the same transport as the rows it is
compared with; and for ``plain``, the pipeline ``TRIO_COUNTERS_PIPELINE`` names
(``stock`` unless set: what one writes by hand).
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["served"]


def served(name: str) -> Any:
    """The app named ``name`` (``bare``, ``bare+lock``, ``plain``), with the transport
    (and, for ``plain``, the pipeline) the environment names installed."""
    from trio_counters.transport import install_from_environ

    fast = install_from_environ()
    if not fast and os.environ.get("TRIO_COUNTERS_TRANSPORT", "").strip().lower() == "fast":
        raise SystemExit("the fast transport could not be installed")
    if name == "plain":
        from trio_counters.pipeline import install

        from .plain_quart import app

        pipeline = os.environ.get("TRIO_COUNTERS_PIPELINE", "stock")
        if install(app, pipeline == "lean") != (pipeline == "lean"):
            raise SystemExit("the lean pipeline could not be installed")
    elif name == "bare":
        from .bare_asgi import unguarded_app as app
    elif name == "bare+lock":
        from .bare_asgi import app
    else:
        raise ValueError(name)
    return app
