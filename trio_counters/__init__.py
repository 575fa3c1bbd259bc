"""trio_counters: a counter server that shows why shared state needs care, the trio way.

``hypercorn --worker-class trio trio_counters:app`` serves :data:`app`, built from
the ``TRIO_COUNTERS_*`` environment; :func:`create_app` builds a fresh one.
"""

from __future__ import annotations

from .app import create_app
from .config import ConfigError, Settings
from .transport import install_from_environ as _install_transport
from .errors import (
    CounterCorrupt,
    CounterNotFound,
    CounterOverflow,
    StoreError,
    StoreMisconfigured,
    StoreUnavailable,
    TooManyCounters,
)

__all__ = [
    "app",
    "create_app",
    "ConfigError",
    "Settings",
    "StoreError",
    "CounterNotFound",
    "CounterOverflow",
    "TooManyCounters",
    "StoreUnavailable",
    "CounterCorrupt",
    "StoreMisconfigured",
]

__version__ = "0.1.0"

# hypercorn's trio worker serves connections with the transport named by
# TRIO_COUNTERS_TRANSPORT (fast or stock); see trio_counters/transport/.
_install_transport()

#: The app hypercorn serves by default, configured from the environment. A setting
#: that cannot work stops the server here with one line naming it, not a traceback.
try:
    app = create_app()
except ConfigError as error:
    raise SystemExit(f"ConfigError: {error}") from None
