"""The load client: C trio tasks, each on its own trio socket, speaking HTTP/1.1 via h11.

Why it is built this way:

* bench.py is the yardstick for the server's performance, so the client must not
  be the bottleneck. Each task keeps one ``h11.Connection`` for as long as its
  socket lives (``start_next_cycle`` between keep-alive requests), the request
  event is built once, and a request costs one ``send_all`` and usually one
  ``receive_some``. Latency is one ``perf_counter()`` pair and a list append;
  nothing is printed per request.
* It must be honest. Every request ends in exactly one of: success (a complete
  2xx response) or one failure kind (see :data:`FAILURE_KINDS`). Nothing is
  retried, so ``succeeded`` is exactly the number of increments the server
  acknowledged.
* Results are written into a :class:`LoadStats` while the load runs, so a run
  cut short by Ctrl-C still has everything measured up to that point.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

import h11
import trio

from trio_counters.testing import TRANSPORT_ERRORS, Connection

__all__ = [
    "MODES",
    "FAILURE_KINDS",
    "ClientError",
    "Target",
    "LoadStats",
    "run_load",
    "fetch",
    "read_counter",
    "set_counter",
]

#: ``keepalive``: each task reuses one connection (like wrk, ``ab -k``).
#: ``close``: a new connection per request that the server must close (like ab).
MODES = ("keepalive", "close")

#: Why a request failed:
#: ``connect`` - the TCP connection could not be opened (refused, reset);
#: ``io`` - the connection broke or the answer was not valid HTTP;
#: ``timeout`` - no complete answer within the per-request timeout;
#: ``unclosed`` - close mode only: a full answer came, but the server did not
#: close the connection within the timeout, as ``Connection: close`` requires
#: (``ab`` hangs on such a server); the server did apply that request;
#: ``status`` - the answer was complete but not 2xx.
FAILURE_KINDS = ("connect", "io", "timeout", "unclosed", "status")

_RECEIVE_SIZE = 65536
_EOM = h11.EndOfMessage()
_TRANSPORT_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError)


class ClientError(Exception):
    """A problem to tell the user in one line (unreachable server, bad answer)."""


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Target:
    """Where the server listens: a loopback address, a port and a path prefix."""

    host: str
    port: int
    prefix: str = ""

    @classmethod
    def from_url(cls, url: str) -> Target:
        """Parse ``http://127.0.0.1:8000[/prefix]``; refuse anything but loopback.

        A load generator aimed at someone else's machine is a denial of service,
        so only 127.0.0.0/8, ::1 and ``localhost`` are accepted. ``localhost`` is
        resolved here once, not on every connect.
        """
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ClientError(f"{url!r} is not an http:// URL like http://127.0.0.1:8000")
        host = "127.0.0.1" if parts.hostname == "localhost" else parts.hostname
        if not _is_loopback(host):
            raise ClientError(f"{url!r}: bench.py only loads servers on this machine (loopback)")
        try:
            port = parts.port or 80
        except ValueError:
            raise ClientError(f"{url!r} has an invalid port") from None
        if parts.query or parts.fragment:
            raise ClientError(f"{url!r}: give the server's base URL, without ?query or #fragment")
        return cls(host, port, parts.path.rstrip("/"))

    @property
    def authority(self) -> str:
        """The Host header: ``host:port``, IPv6 in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.authority}{self.prefix}"

    def target(self, endpoint: str, **params: str) -> str:
        """The request-target for an endpoint, e.g. ``/inc?name=i``."""
        query = "&".join(f"{key}={quote(str(value), safe='')}" for key, value in params.items())
        return f"{self.prefix}{endpoint}?{query}" if query else f"{self.prefix}{endpoint}"


@dataclass
class LoadStats:
    """What a load run measured; filled in as it goes so an interrupted run keeps it."""

    #: Seconds from a request's start to its complete 2xx answer, successes only.
    latencies: list[float] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAILURE_KINDS, 0))
    started: float | None = None
    finished: float | None = None
    #: CPU seconds this process spent while the load ran (``time.process_time``):
    #: the client's own cost, to check that it was not the bottleneck.
    cpu_s: float = 0.0

    @property
    def succeeded(self) -> int:
        return len(self.latencies)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @property
    def done(self) -> int:
        return self.succeeded + self.failed

    def elapsed(self) -> float:
        """Seconds the load has run (so far, if it is still running)."""
        if self.started is None:
            return 0.0
        end = self.finished if self.finished is not None else time.perf_counter()
        return end - self.started


class _Budget:
    """How many requests are left to start, shared by all the tasks of one run.

    Trio switches tasks only at an ``await``, so a plain integer is race-free.
    """

    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        self.left = left


async def _connect(target: Target) -> socket.socket:
    """Open a TCP connection; return the plain non-blocking socket for the hot path.

    The connect itself goes through a trio socket wrapping that same socket.
    ``trio.open_tcp_stream`` would add a resolver call and a happy-eyeballs
    nursery per connection, which shows in close mode's cost per request.
    """
    family = socket.AF_INET6 if ":" in target.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await trio.socket.from_stdlib_socket(sock).connect((target.host, target.port))
    except BaseException:
        sock.close()
        raise
    return sock


async def _exchange(sock: socket.socket, conn: h11.Connection, request: h11.Request) -> int:
    """Send one request and read its whole answer; return the status code.

    Measured, this is where the client spends its time, so it talks to the
    socket through trio's low-level readiness API instead of SocketStream: a
    small request goes out in one ``send`` (it fits the empty socket buffer),
    and each read waits for readiness first instead of trying a ``recv`` that
    fails with EAGAIN (hypercorn writes the head and the body of an answer
    separately, so a plain stream would fail a read or two per request). Every
    request still waits in ``wait_readable``, a trio checkpoint, so the client
    tasks take turns and cancellation (timeout, Ctrl-C) lands there.
    """
    data = conn.send(request) + conn.send(_EOM)  # type: ignore[operator]
    while data:
        try:
            data = data[sock.send(data) :]
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
    status = 0
    next_event, receive_data = conn.next_event, conn.receive_data
    while True:
        event = next_event()
        if event is h11.NEED_DATA:
            await trio.lowlevel.wait_readable(sock)
            try:
                receive_data(sock.recv(_RECEIVE_SIZE))  # b"" at EOF: h11 then reports it
            except BlockingIOError:  # a spurious wake-up
                pass
        elif type(event) is h11.Response:
            status = event.status_code  # type: ignore[union-attr]
        elif type(event) is h11.EndOfMessage:
            return status
        elif type(event) is h11.ConnectionClosed:
            raise ConnectionResetError("the server closed the connection")


async def _until_closed(sock: socket.socket, conn: h11.Connection) -> None:
    """After a ``Connection: close`` answer, wait for the server to close."""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            await trio.lowlevel.wait_readable(sock)
            try:
                conn.receive_data(sock.recv(_RECEIVE_SIZE))
            except BlockingIOError:
                pass
        elif type(event) is h11.ConnectionClosed:
            return
        else:  # pragma: no cover - h11 raises on anything after the answer
            raise h11.RemoteProtocolError(f"unexpected {event!r} after the answer")


async def _keepalive_worker(
    target: Target, request: h11.Request, budget: _Budget, stats: LoadStats, timeout: float
) -> None:
    """Run requests on one reused connection; reconnect only after a failure or a close.

    One cancel scope per connection, its deadline moved forward at the start of
    each request, is the per-request timeout without a new scope per request.
    """
    latencies, failures, clock, now = stats.latencies, stats.failures, time.perf_counter, trio.current_time
    while budget.left > 0:
        budget.left -= 1
        kind: str | None = "connect"
        start = clock()
        sock: socket.socket | None = None
        with trio.CancelScope(deadline=now() + timeout) as scope:
            try:
                sock = await _connect(target)
                conn = h11.Connection(h11.CLIENT)
                while True:
                    kind = "io"
                    status = await _exchange(sock, conn, request)
                    kind = None
                    if 200 <= status < 300:
                        latencies.append(clock() - start)
                    else:
                        failures["status"] += 1
                    if budget.left <= 0 or conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                        break  # all done, or the server is closing this connection
                    conn.start_next_cycle()
                    budget.left -= 1
                    start = clock()
                    scope.deadline = now() + timeout
            except _TRANSPORT_ERRORS:
                pass
            finally:
                if sock is not None:
                    sock.close()
        if kind is not None:
            failures["timeout" if scope.cancelled_caught else kind] += 1
            if kind == "connect":  # a refused connect can fail without yielding
                await trio.lowlevel.checkpoint()


async def _close_worker(
    target: Target, request: h11.Request, budget: _Budget, stats: LoadStats, timeout: float
) -> None:
    """Run requests ab-style: connect, ask with ``Connection: close``, wait for the close.

    The latency is connect to complete answer; waiting for the server's close
    is part of the timeout but not of the latency.
    """
    latencies, failures, clock = stats.latencies, stats.failures, time.perf_counter
    while budget.left > 0:
        budget.left -= 1
        kind: str | None = "connect"
        status = 0
        latency = 0.0
        start = clock()
        sock: socket.socket | None = None
        with trio.move_on_after(timeout) as scope:
            try:
                sock = await _connect(target)
                conn = h11.Connection(h11.CLIENT)
                kind = "io"
                status = await _exchange(sock, conn, request)
                latency = clock() - start
                kind = "unclosed"
                await _until_closed(sock, conn)
                kind = None
            except ConnectionResetError:
                if kind == "unclosed":  # a reset after the full answer is a close too
                    kind = None
            except _TRANSPORT_ERRORS:
                pass
            finally:
                if sock is not None:
                    sock.close()
        if kind is not None:
            failures["timeout" if scope.cancelled_caught and kind != "unclosed" else kind] += 1
            if kind == "connect":  # a refused connect can fail without yielding
                await trio.lowlevel.checkpoint()
        elif 200 <= status < 300:
            latencies.append(latency)
        else:
            failures["status"] += 1


async def run_load(
    target: Target,
    *,
    requests: int,
    concurrency: int,
    mode: str = "keepalive",
    timeout: float = 10.0,
    stats: LoadStats | None = None,
    method: str = "GET",
    endpoint: str = "/inc",
    name: str = "i",
) -> LoadStats:
    """Send ``requests`` requests to ``endpoint?name=NAME`` from ``concurrency`` tasks.

    Returns ``stats`` (a new :class:`LoadStats` if none is given). Pass your own
    to watch progress while it runs or to keep partial results on cancellation.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if requests < 0 or concurrency < 1 or not timeout > 0:
        raise ValueError("need requests >= 0, concurrency >= 1 and timeout > 0")
    stats = LoadStats() if stats is None else stats
    headers = [("Host", target.authority)]  # what wrk sends: the same request, the same server work
    if mode == "close":
        headers.append(("Connection", "close"))
    request = h11.Request(method=method, target=target.target(endpoint, name=name), headers=headers)
    worker = _keepalive_worker if mode == "keepalive" else _close_worker
    budget = _Budget(requests)
    cpu_start = time.process_time()
    stats.started = time.perf_counter()
    try:
        async with trio.open_nursery() as nursery:
            for _ in range(min(concurrency, requests)):
                nursery.start_soon(worker, target, request, budget, stats, timeout)
    finally:
        stats.finished = time.perf_counter()
        stats.cpu_s = time.process_time() - cpu_start
    return stats


async def fetch(target: Target, request_target: str, *, timeout: float = 5.0) -> tuple[int, str]:
    """One GET on its own connection; return (status, body). For control requests.

    Raises :class:`ClientError` with a one-line reason if there is no answer.
    """
    try:
        with trio.fail_after(timeout):
            try:
                sock = await _connect(target)
            except OSError as exc:
                reason = os.strerror(exc.errno) if exc.errno else str(exc)
                raise ClientError(f"cannot connect to {target.url}: {reason}") from None
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
            async with Connection(stream, target.authority) as connection:
                reply = await connection.request(request_target)
            return reply.status, reply.body
    except trio.TooSlowError:
        raise ClientError(f"{target.url} did not answer within {timeout:g} s") from None
    except (*TRANSPORT_ERRORS, h11.ProtocolError) as exc:
        raise ClientError(f"{target.url} broke off the connection: {exc}") from None
    except UnicodeDecodeError:
        raise ClientError(f"{target.url} answered with a body that is not UTF-8") from None


async def read_counter(target: Target, name: str, *, timeout: float = 5.0) -> int:
    """The value of counter ``name`` (``GET /get?name=NAME`` answers ``NAME: VALUE``)."""
    status, body = await fetch(target, target.target("/get", name=name), timeout=timeout)
    if status == 404:
        raise ClientError(
            f"counter {name!r} does not exist on {target.url}; create it with "
            f"{target.target('/set', name=name, val='0')}"
        )
    label, sep, value = body.strip().rpartition(": ")
    if status != 200 or not sep or label != name:
        raise ClientError(f"{target.url}/get answered {status} {body.strip()!r}, not '{name}: N'")
    try:
        return int(value)
    except ValueError:
        raise ClientError(f"{target.url}/get answered {body.strip()!r}: not a number") from None


async def set_counter(target: Target, name: str, value: int, *, timeout: float = 5.0) -> None:
    """Set counter ``name`` to ``value`` (``GET /set?name=NAME&val=VALUE``)."""
    status, body = await fetch(target, target.target("/set", name=name, val=str(value)), timeout=timeout)
    if not 200 <= status < 300:
        raise ClientError(f"{target.url}/set answered {status} {body.strip()!r}")
