"""A faster connection handler for hypercorn's trio worker, installed at import.

Hypercorn's trio worker (``hypercorn --worker-class trio``) serves each TCP
connection with ``hypercorn.trio.tcp_server.TCPServer``. Profiling it under
keep-alive load puts about half of the worker's CPU in two of its mechanisms,
not in trio and not in the app:

* **The idle keep-alive timer.** Every request stops, and every response
  restarts, a timer *task* (``TrioSingleTask`` in ``hypercorn/trio/worker_context.py``):
  a lock (a checkpoint each time), a cancel, and a ``nursery.start`` that spawns a
  new task with a new ``move_on_after`` and waits for it to start.
* **The send path.** Each h11 event becomes its own ``send_all``, under a
  ``trio.Lock`` and a shielded cancel scope (``TCPServer.protocol_send``); a
  plain response is three of them -- headers, body, and an *empty* one for
  ``EndOfMessage`` with a ``Content-Length`` body (``hypercorn/protocol/h11.py``,
  ``_send_h11_event``).

:class:`FastTCPServer` subclasses hypercorn's ``TCPServer`` and changes those:

* **A re-armable idle deadline.** One long-lived watchdog task per connection
  sits in one cancel scope; ``Updated(idle=False)`` sets its deadline to
  infinity, ``Updated(idle=True)`` moves it to ``now + keep_alive_timeout``. No
  task, lock or nursery per request. Shutdown behaves as before: an idle
  connection closes as soon as the worker is told to stop; a busy one finishes
  its response first (and then closes, as hypercorn's protocols decide).
* **Coalesced writes.** The bytes one HTTP/1.x ``send()`` of the app produces
  (a response's head, body and end, usually) go to a per-connection buffer and
  are written once, when that ``send()`` returns -- or sooner: at the end of the
  response (``Updated(idle=True)``, ``Closed``) or once 64 KiB are waiting. Such
  a ``send()`` never waits on anything but the socket, so nothing is held while
  the app awaits (a streamed body goes out chunk by chunk). The one exception
  is the head (``http.response.start``): the body nearly always follows without
  a yield, so the head waits for it -- unless the app yields first, in which
  case a deadline already past wakes a per-connection task at the next
  scheduling round to write the head alone. All other bytes --
  h2's frames, websockets, a ``100 Continue``, the protocol's own error answers
  -- are written at once, after whatever is buffered: one writer at a time, in
  order. Empty writes are dropped. A plain response is one write instead of
  three, with no task woken for it: an earlier version woke a flusher task for
  every response, and that one wake-up cost about a quarter of the worker's CPU
  per request at C=10 on a bare ASGI app.
* **Direct socket I/O.** On a plain TCP socket a write is one ``os.write`` on
  the socket's fd, with no cancel scope and no yield when the kernel takes it
  all (a response nearly always fits); only a partial write waits, shielded as
  hypercorn's writes are, with ``trio.lowlevel.wait_writable``. Reads wait with
  ``trio.lowlevel.wait_readable`` and take one ``os.read``; a cancel scope for
  ``read_timeout`` is opened only when one is set. trio's ``SocketStream``
  spends a conflict detector, a generator-based context manager, and a trailing
  yield on every call. Under TLS the stream's own methods are used.
* **Messages to the app without a yield.** hypercorn puts ``http.request`` and
  ``http.disconnect`` into each request's memory channel with ``await
  send()``, which always yields; here a put that fits uses ``send_nowait``.

Two behaviours improve on the way. The close that a ``Closed`` event asks for
(HTTP/1.0, ``Connection: close``, errors) is shielded, and ``http.disconnect``
no longer yields to quart-trio in the middle of the app's last ``send()``: so
the quart-trio/hypercorn close defect that :mod:`trio_counters.connection` works
around does not occur on this transport even without that fix (the tests serve
a plain QuartTrio app to prove it). ``CompleteSends`` stays for the stock
transport and passes ``send`` through untouched on this one. And when the client has gone
or the read timed out, the connection's tasks end at once: hypercorn's timer
task kept a dead connection's task alive, and a half-sent request's socket
open, until ``keep_alive_timeout``, whatever ``read_timeout`` said.

Everything else is hypercorn's own code, called as is: TLS handshake, h11 and
h2 (ALPN and h2c upgrade) protocols, ``max_requests``, graceful shutdown.

Which hypercorn: the subclass leans on private internals (the ``TCPServer``
constructor and methods, the ``Updated``/``RawData``/``Closed`` events, the
trio ``TaskGroup`` and its ``_handle``, the module attribute
``hypercorn.trio.run.TCPServer`` that ``worker_serve`` looks up by name). It was
checked against hypercorn :data:`CHECKED_HYPERCORN_VERSION` only; on any other
version, or if an internal it needs is missing, :func:`install` leaves hypercorn
alone and warns once (:class:`TransportFallbackWarning`).

Setting: ``TRIO_COUNTERS_TRANSPORT=fast`` or ``stock`` (default:
:data:`DEFAULT_TRANSPORT`), read by :func:`install_from_environ` when
:mod:`trio_counters` is imported -- in hypercorn's worker process, since that is
where the app is imported.

Upstream changes that would make this module unnecessary:

1. hypercorn, ``hypercorn/trio/tcp_server.py``: replace ``TrioSingleTask`` for
   the idle timeout by one cancel scope per connection whose deadline
   ``protocol_send(Updated(...))`` moves; end it when the read loop ends.
2. hypercorn, ``TCPServer.protocol_send``: buffer ``RawData`` and write once per
   response (or when the sender yields), skipping empty data -- or have
   ``hypercorn/protocol/h11.py`` emit one ``RawData`` for a response whose body
   comes in the same ASGI send as its end.
3. hypercorn, ``hypercorn/trio/task_group.py`` ``spawn_app``: put messages with
   ``send_nowait`` when the channel has room.
4. hypercorn: shield the close in ``protocol_send(Closed())``; quart-trio: do
   not cancel the request's nursery (``handle_messages``) while the app's last
   ``send()`` is still running -- together, the close defect's fix.
5. trio: cheaper ``SocketStream.send_all`` / ``receive_some`` (the per-call
   generator-based error translation and conflict detector). Their trailing
   yield is trio's checkpoint rule and would stay; with 1-4 done, the direct
   socket I/O here would be worth a few percent and could go.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import logging
import os
import warnings
from math import inf
from typing import Any

import trio

from .config import ConfigError

__all__ = [
    "CHECKED_HYPERCORN_VERSION",
    "ENVIRONMENT_VARIABLE",
    "FastTCPServer",
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

#: Buffered bytes past which the sender writes at once instead of waiting for
#: the end of the response: bounds memory per connection and keeps backpressure.
HIGH_WATER = 64 * 1024

log = logging.getLogger(__name__)

try:
    import hypercorn.trio.run as _run_module
    from hypercorn.events import Closed, RawData, Updated
    from hypercorn.protocol import ProtocolWrapper
    from hypercorn.trio.task_group import TaskGroup, _handle as _handle_app
    from hypercorn.trio.tcp_server import MAX_RECV, TCPServer as _StockTCPServer
    from hypercorn.typing import ConnectionState
    from hypercorn.utils import parse_socket_addr
except ImportError as error:  # pragma: no cover - exercised only on another hypercorn
    _IMPORT_ERROR: ImportError | None = error
    _StockTCPServer = TaskGroup = object  # type: ignore[assignment,misc]
else:
    _IMPORT_ERROR = None


class TransportFallbackWarning(RuntimeWarning):
    """The fast transport could not be used; hypercorn's own is serving."""


class _TaskGroup(TaskGroup):  # type: ignore[misc,valid-type]
    """hypercorn's per-connection TaskGroup, handing messages to the app without a yield.

    hypercorn gives each request's app task a memory channel and puts
    ``http.request`` / ``http.disconnect`` into it with ``await send()``, which
    always yields to trio. Here a put that fits goes in with ``send_nowait``;
    only a full channel (``max_app_queue_size``) waits, as before. The app's
    ``send`` goes through ``wrap_send``, the connection's write coalescing.
    """

    def __init__(self, wrap_send: Any) -> None:
        super().__init__()
        self._wrap_send = wrap_send

    async def spawn_app(self, app: Any, config: Any, scope: Any, send: Any) -> Any:
        put_channel, get_channel = trio.open_memory_channel[Any](config.max_app_queue_size)
        self._nursery.start_soon(
            _handle_app,
            app,
            config,
            scope,
            get_channel.receive,
            self._wrap_send(scope, send),
            trio.to_thread.run_sync,
            trio.from_thread.run,
        )
        put_nowait = put_channel.send_nowait

        async def put(message: Any) -> None:
            try:
                put_nowait(message)
            except trio.WouldBlock:
                await put_channel.send(message)

        return put


class FastTCPServer(_StockTCPServer):  # type: ignore[misc,valid-type]
    """hypercorn's trio ``TCPServer`` with a re-armable idle deadline and coalesced writes."""

    def __init__(self, app: Any, config: Any, context: Any, state: Any, stream: Any) -> None:
        super().__init__(app, config, context, state, stream)
        # Coalesced writes: chunks waiting for one write, written in order by
        # one writer at a time.
        self._out: list[bytes] = []
        self._out_size = 0
        self._writing = False
        self._write_done = trio.lowlevel.ParkingLot()
        # The tasks inside an HTTP/1.x send() of the app: their bytes wait in
        # the buffer until that send() returns.
        self._in_send: set[trio.lowlevel.Task] = set()
        # A response head held after its send() for the body, which nearly
        # always follows without a yield and is written with it. A deadline in
        # the past on this scope wakes _write_held at the next scheduling round
        # if the head is still waiting then (the app yielded in between).
        self._held = trio.CancelScope()
        self._holding = False
        self._reading = False
        # The idle deadline: entered by the watchdog task, moved by protocol_send.
        self._idle_scope = trio.CancelScope()
        self._busy = False
        # Ends the watchdog when the read loop ends.
        self._stop_watchdog = trio.CancelScope()
        # Plain TCP: the trio socket, for direct reads and writes; None under TLS.
        self._socket = stream.socket if isinstance(stream, trio.SocketStream) else None

    async def run(self) -> None:
        # As hypercorn's run(), with the idle timer task replaced by the
        # watchdog, which ends when reading ends.
        try:
            try:
                with trio.fail_after(self.config.ssl_handshake_timeout):
                    await self.stream.do_handshake()
            except (trio.BrokenResourceError, trio.TooSlowError):
                return  # Handshake failed
            alpn_protocol = self.stream.selected_alpn_protocol()
            socket = self.stream.transport_stream.socket
            ssl = True
        except AttributeError:  # Not SSL
            alpn_protocol = "http/1.1"
            socket = self.stream.socket
            ssl = False

        try:
            client = parse_socket_addr(socket.family, socket.getpeername())
            server = parse_socket_addr(socket.family, socket.getsockname())

            async with _TaskGroup(self._coalesce) as task_group:
                self._task_group = task_group
                self.protocol = ProtocolWrapper(
                    self.app,
                    self.config,
                    self.context,
                    task_group,
                    ConnectionState(self.state),
                    ssl,
                    client,
                    server,
                    self.protocol_send,
                    alpn_protocol,
                )
                await self.protocol.initiate()
                self._idle_scope.deadline = trio.current_time() + self.config.keep_alive_timeout
                task_group.spawn(self._watch_idle)
                self._reading = True
                task_group.spawn(self._write_held)
                try:
                    await self._read_data()
                finally:
                    self._stop_watchdog.cancel()
                    self._reading = False  # from now on nothing is held
                    self._held.cancel()
        except OSError:
            pass
        finally:
            await self._close()

    async def protocol_send(self, event: Any) -> None:
        if isinstance(event, RawData):
            if event.data:
                self._out.append(event.data)
                self._out_size += len(event.data)
                if (
                    self._out_size >= HIGH_WATER
                    or trio.lowlevel.current_task() not in self._in_send
                ):
                    await self._flush()
        elif isinstance(event, Updated):
            self._busy = not event.idle
            if event.idle:
                # Re-arm first: a cancellation during the flush must not leave
                # the connection without a deadline.
                if self.context.terminated.is_set():
                    self._idle_scope.deadline = -inf
                else:
                    self._idle_scope.deadline = (
                        trio.current_time() + self.config.keep_alive_timeout
                    )
                await self._flush()
            else:
                self._idle_scope.deadline = inf
        elif isinstance(event, Closed):
            # Shielded, so that a cancellation arriving now cannot skip the
            # close. A write in progress is not waited for: closing the socket
            # ends it, as hypercorn's close does.
            with trio.CancelScope(shield=True):
                if not self._writing:
                    await self._flush()
                await self._close()
            await self.protocol.handle(Closed())

    async def _flush(self) -> None:
        """Write everything buffered, in order, one write per turn."""
        if self._holding:
            self._holding = False
            self._held.deadline = inf
        while self._out:
            if self._writing:
                # The writer loops until the buffer is empty; wait for it.
                await self._write_done.park()
                continue
            chunks = self._out
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            self._out = []
            self._out_size = 0
            self._writing = True
            try:
                await self._write(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                broken = True
            else:
                broken = False
            finally:
                self._writing = False
                self._write_done.unpark_all()
            if broken:
                self._out = []
                self._out_size = 0
                await self.protocol.handle(Closed())

    def _coalesce(self, scope: dict[str, Any], send: Any) -> Any:
        """The app's ``send`` for one request: an HTTP/1.x one writes once, when it returns.

        Only HTTP/1.x: there a ``send()`` waits on nothing but the socket, so
        holding its bytes until it returns holds them for no time at all. An h2
        ``send()`` can wait for the peer's flow control, which must not find our
        bytes still buffered; it, and websockets, write at once. A response head
        is held a little longer, for its body: see :meth:`_hold`.
        """
        if scope.get("type") != "http" or scope.get("http_version") not in ("1.0", "1.1"):
            return send
        in_send = self._in_send

        async def send_coalesced(message: dict[str, Any] | None) -> None:
            task = trio.lowlevel.current_task()
            in_send.add(task)
            try:
                await send(message)
            finally:
                in_send.discard(task)
                if self._out and self._reading and _is_head(message):
                    self._hold()
                else:
                    await self._flush()  # at once when nothing is buffered

        return send_coalesced

    def _hold(self) -> None:
        """Leave the buffered head for the body's write, or for _write_held."""
        self._holding = True
        self._held.deadline = -inf

    async def _write_held(self) -> None:
        """Write a response head whose task yielded to trio before sending the body."""
        while self._reading:
            with self._held:
                await trio.sleep_forever()
            self._held = trio.CancelScope()
            await self._flush()

    async def _watch_idle(self) -> None:
        """Close the connection when its idle deadline passes, or at shutdown when idle."""
        with self._stop_watchdog:
            with self._idle_scope:
                await self.context.terminated.wait()
                if self._busy:
                    # Shutting down mid-request: the response ends, and
                    # Updated(idle=True) then sets the deadline to -inf.
                    await trio.sleep_forever()
            with trio.CancelScope(shield=True):
                await self._initiate_server_close()

    async def _write(self, data: bytes) -> None:
        """Write all of ``data``; a write once begun is never cut by a cancellation.

        On a plain TCP socket, the bytes go to the kernel with one ``os.write``
        when it takes them all (almost always, on a response), with no cancel
        scope and no yield; only a partial write waits, shielded, for the socket
        to drain. Otherwise (TLS) this is hypercorn's shielded ``send_all``.
        """
        sock = self._socket
        if sock is None:
            with trio.CancelScope(shield=True):
                await self.stream.send_all(data)
            return
        sent = self._write_some(sock, data)
        if sent == len(data):
            return
        with trio.CancelScope(shield=True):
            remaining = memoryview(data)[sent:]
            while remaining:
                await trio.lowlevel.wait_writable(sock)
                remaining = remaining[self._write_some(sock, remaining) :]

    @staticmethod
    def _write_some(sock: Any, data: bytes | memoryview) -> int:
        fd = sock.fileno()
        if fd == -1 or sock.did_shutdown_SHUT_WR:
            raise trio.ClosedResourceError("the connection is closed")
        try:
            return os.write(fd, data)
        except BlockingIOError:
            return 0
        except OSError as error:
            raise trio.BrokenResourceError(f"the peer is gone: {error}") from error

    async def _read_data(self) -> None:
        # As hypercorn's: read until EOF, an error, or read_timeout, handing each
        # chunk to the protocol. On a plain TCP socket: wait for readability, then
        # one os.read, without trio's per-call context managers and trailing
        # yield; and no cancel scope at all when there is no read_timeout.
        sock = self._socket
        read_timeout = self.config.read_timeout
        while True:
            scope = None
            try:
                if sock is None:
                    with trio.CancelScope(
                        deadline=trio.current_time() + (read_timeout or inf)
                    ) as scope:
                        data = await self.stream.receive_some(MAX_RECV)
                else:
                    fd = sock.fileno()
                    if fd == -1:  # closed here: a Closed event, or the idle watchdog
                        break
                    if read_timeout:
                        with trio.CancelScope(
                            deadline=trio.current_time() + read_timeout
                        ) as scope:
                            await trio.lowlevel.wait_readable(sock)
                        if scope.cancelled_caught:
                            break
                    else:
                        await trio.lowlevel.wait_readable(sock)
                    # Closed after the wake-up but before this task ran (by a
                    # Closed event, say), fd may already belong to a connection
                    # accepted since: check again, with no await in between.
                    if sock.fileno() != fd:
                        break
                    try:
                        data = os.read(fd, MAX_RECV)
                    except BlockingIOError:
                        continue
            except (trio.ClosedResourceError, trio.BrokenResourceError, OSError):
                break
            if scope is not None and scope.cancelled_caught:
                break
            await self.protocol.handle(RawData(bytes(data)))
            if data == b"":
                break
        await self.protocol.handle(Closed())


def _is_head(message: dict[str, Any] | None) -> bool:
    return message is not None and message.get("type") == "http.response.start"


# What the subclass relies on, by name: checked before it is installed.
_REQUIRED_METHODS = ("run", "protocol_send", "_read_data", "_close", "_initiate_server_close")
_REQUIRED_CONFIG = ("keep_alive_timeout", "read_timeout", "ssl_handshake_timeout")
_REQUIRED_INIT = ["self", "app", "config", "context", "state", "stream"]

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
    if not callable(getattr(TaskGroup, "spawn", None)):
        return "hypercorn's trio TaskGroup lacks spawn"
    return None


def install(enabled: bool = True) -> bool:
    """Make hypercorn's trio worker use :class:`FastTCPServer` (or, if not enabled, its own).

    Returns whether the fast transport is now installed. If it was asked for but
    this hypercorn is not the checked one, hypercorn is left as it is and a
    :class:`TransportFallbackWarning` is issued, once per process.
    """
    global _stock_tcp_server, _warned
    if _IMPORT_ERROR is None and _stock_tcp_server is None:
        current = getattr(_run_module, "TCPServer", None)
        _stock_tcp_server = _StockTCPServer if current is FastTCPServer else current
    if not enabled:
        if _IMPORT_ERROR is None and _stock_tcp_server is not None:
            _run_module.TCPServer = _stock_tcp_server
        return False
    problem = _incompatibility()
    if problem is not None:
        if _IMPORT_ERROR is None and _stock_tcp_server is not None:
            _run_module.TCPServer = _stock_tcp_server
        if not _warned:
            _warned = True
            warnings.warn(
                f"trio_counters: using hypercorn's stock trio transport, not the fast one: "
                f"{problem}. Set {ENVIRONMENT_VARIABLE}=stock to silence this.",
                TransportFallbackWarning,
                stacklevel=2,
            )
        return False
    _run_module.TCPServer = FastTCPServer
    log.debug("fast trio transport installed in hypercorn.trio.run")
    return True


def active() -> str:
    """``"fast"`` if hypercorn's trio worker will use :class:`FastTCPServer`, else ``"stock"``."""
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
