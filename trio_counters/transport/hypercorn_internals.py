"""The private hypercorn internals the transport builds on, imported in one place.

The import is guarded so that the package stays importable on a hypercorn that
lacks any of them: :data:`IMPORT_ERROR` then says what is missing, the names
below stand in as inert placeholders, and :func:`trio_counters.transport.install`
falls back to hypercorn's own transport with a warning instead of failing.
"""

from __future__ import annotations

from typing import Any

try:
    import hypercorn.trio.run as run_module
    from hypercorn.events import Closed, RawData, Updated
    from hypercorn.protocol import ProtocolWrapper
    from hypercorn.protocol.h2 import H2Protocol
    from hypercorn.protocol.h11 import H2CProtocolRequiredError, H2ProtocolAssumedError, H11Protocol
    from hypercorn.trio.task_group import TaskGroup as StockTaskGroup, _handle as handle_app
    from hypercorn.trio.tcp_server import MAX_RECV, TCPServer as StockTCPServer
    from hypercorn.typing import ConnectionState
    from hypercorn.utils import LifespanFailureError, parse_socket_addr
except ImportError as error:  # pragma: no cover - exercised only on another hypercorn
    IMPORT_ERROR: ImportError | None = error
    StockTCPServer = StockTaskGroup = ProtocolWrapper = H11Protocol = H2Protocol = object  # type: ignore[assignment,misc]
    H2CProtocolRequiredError = H2ProtocolAssumedError = LifespanFailureError = Exception  # type: ignore[assignment,misc]
    run_module = Closed = RawData = Updated = None  # type: ignore[assignment,misc]
    handle_app = ConnectionState = parse_socket_addr = None  # type: ignore[assignment,misc]
    MAX_RECV: Any = None
else:
    IMPORT_ERROR = None
