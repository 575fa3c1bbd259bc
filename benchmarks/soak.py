"""A bounded soak: mixed traffic and misbehaving clients against the real server, then the books.

    python benchmarks/soak.py [--seconds 60] [--strategy lock] [--warmup 10] [--keep-alive 5]

Starts ``hypercorn --worker-class trio --backlog 1024 trio_counters:app`` itself
(on a free 127.0.0.1 port, in its own session, stopped with SIGTERM at the end)
and, for ``--seconds``, runs at once:

* well-behaved clients, keep-alive and close mode (``Connection: close`` and
  HTTP/1.0): ``/inc`` on shared counters, ``/set``, ``/get`` and ``/inc`` on
  counters each client owns (every answer checked against the client's model),
  form POSTs, and requests that must be refused (404, 400);
* misbehaving clients: idle connections, half-sent requests, a slowloris,
  unfinished POST bodies, garbage bytes, oversized requests (414, 413, 431),
  unknown paths, and clients that disconnect at every stage of an ``/inc``.

It keeps the books from the client side: every ``/inc`` that got 200 is
*acknowledged*; one whose full request went out but whose answer never came (the
client hung up) *might have counted*. At the end it reads every counter back:

* shared counters (only well-behaved clients): final == acknowledged, exactly;
* disrupted counters (also hit by the disconnecting clients):
  acknowledged <= final <= acknowledged + might have counted;
* owned counters: final == the owner's model.

It prints requests, refusals by status, misbehaving outcomes, unexpected errors,
the counts, and the worker's RSS (``/proc/PID/status`` VmRSS of hypercorn's worker
process, not its parent) at start, after the warm-up and at the end, with the
growth after warm-up. Exit status 1 if anything is off: an unexpected error, a
count out of bounds, RSS growth of 10 % or more after warm-up, a traceback in
the server's log other than hypercorn's known close race, or a server that did
not exit 0.

Loopback only; nothing here listens or connects anywhere else.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.server import cpu_seconds  # noqa: E402

HOST = "127.0.0.1"

#: The app's own limits (trio_counters/app.py), repeated so this script can run
#: against any checkout; a mismatch shows up as unexpected statuses.
MAX_QUERY_BYTES = 4096
MAX_BODY_BYTES = 4096
BODY_TIMEOUT = 10.0
#: hypercorn's h11_max_incomplete_size and its read size.
H11_MAX_INCOMPLETE = 16 * 1024
MAX_RECV = 64 * 1024

#: Slack on every deadline; a healthy run never waits for it.
SLACK = 5.0
#: A well-behaved request that takes longer than this is an error.
REQUEST_TIMEOUT = 5.0
#: RSS growth after warm-up that fails the run, in percent.
MAX_RSS_GROWTH = 10.0

SHARED = [f"soak-s-{n}" for n in range(100)]
DISRUPTED = [f"soak-d-{n}" for n in range(10)]

_TRANSPORT_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)
_RUNNING = re.compile(r"Running on http://127\.0\.0\.1:(\d+)\b")
_LOG_RECORD_START = re.compile(r"^\[\d{4}-\d\d-\d\d ")
#: hypercorn 0.18's stock trio transport: when the app answers before reading a
#: request body (413) and the client then closes, ``TCPServer._close`` (send_eof,
#: outside its send lock) meets the app task's last send_all; hypercorn logs
#: "Error in ASGI Framework". The client already has its whole answer.
KNOWN_HYPERCORN_RACE = "BusyResourceError: another task is currently sending data on this SocketStream"


# --------------------------------------------------------------------------------------
# The server: started here, its worker found, its log kept and classified


class ServerLog:
    """Drains the server's output, finds its port, and sorts the tracebacks in it."""

    def __init__(self) -> None:
        self.tail: collections.deque[str] = collections.deque(maxlen=60)
        self.port: int | None = None
        self.settled = trio.Event()
        self.unexpected: list[str] = []
        self.known_races = 0
        self._record: list[str] = []

    async def pump(self, stream: trio.abc.ReceiveStream) -> None:
        pending = b""
        async with stream:
            while data := await stream.receive_some(65536):
                *lines, pending = (pending + data).split(b"\n")
                for line in lines:
                    self._line(line.decode("utf-8", "replace"))
        if pending:
            self._line(pending.decode("utf-8", "replace"))
        self._end_record()
        self.settled.set()

    def _line(self, line: str) -> None:
        self.tail.append(line)
        if _LOG_RECORD_START.match(line):
            self._end_record()
        self._record.append(line)
        if self.port is None and (match := _RUNNING.search(line)):
            self.port = int(match[1])
            self.settled.set()

    def _end_record(self) -> None:
        record = "\n".join(self._record)
        self._record = []
        if "Traceback" not in record:
            return
        if "Error in ASGI Framework" in record and KNOWN_HYPERCORN_RACE in record:
            self.known_races += 1
        else:
            self.unexpected.append(record)


@dataclasses.dataclass
class Server:
    process: trio.Process
    port: int
    worker: int
    log: ServerLog
    exit_code: int | None = None


def find_worker(parent: int) -> int:
    """hypercorn's worker: the parent's child started by multiprocessing's spawn
    (the other child, if any, is multiprocessing's resource tracker)."""
    try:
        with open(f"/proc/{parent}/task/{parent}/children") as children:
            pids = children.read().split()
    except FileNotFoundError:
        pids = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if b"spawn_main" in cmdline.read():
                    return int(pid)
        except FileNotFoundError:
            continue
    return parent  # hypercorn -w 0: the parent serves itself


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


async def _stop(process: trio.Process, timeout: float) -> None:
    """SIGTERM (hypercorn's graceful shutdown), then SIGKILL to its whole group."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(timeout):
            await process.wait()
    if process.returncode is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        await process.wait()


@asynccontextmanager
async def running_server(
    strategy: str,
    *,
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    startup_timeout: float = 30.0,
) -> AsyncIterator[Server]:
    """The README's server command for ``strategy`` on a free loopback port, until the block ends."""
    command = [
        sys.executable, "-m", "hypercorn",
        "--worker-class", "trio",
        "--bind", f"{HOST}:0",
        "--backlog", "1024",
        *args,
        "trio_counters:app",
    ]  # fmt: skip
    process = await trio.lowlevel.open_process(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "TRIO_COUNTERS_STORE": strategy, **(env or {})},
        cwd=ROOT,
        start_new_session=True,  # a Ctrl-C at the terminal reaches this script, which stops it
    )
    log = ServerLog()
    try:
        async with trio.open_nursery() as nursery:
            assert process.stdout is not None
            nursery.start_soon(log.pump, process.stdout)
            server: Server | None = None
            try:
                with trio.move_on_after(startup_timeout):
                    await log.settled.wait()
                if log.port is None:
                    raise SystemExit(
                        f"the server did not start ({' '.join(command)}); its output:\n"
                        + "\n".join(log.tail)
                    )
                server = Server(process, log.port, find_worker(process.pid), log)
                yield server
            finally:
                with trio.CancelScope(shield=True):
                    await _stop(process, 15)
                    if server is not None:
                        server.exit_code = process.returncode
    finally:
        if process.returncode is None:
            with trio.CancelScope(shield=True):
                await _stop(process, 0)


# --------------------------------------------------------------------------------------
# A small HTTP/1.1 client over trio sockets, strict about what comes back


class Closed(Exception):
    """The server closed the connection before a whole response came."""


@dataclasses.dataclass
class Response:
    status: int
    body: bytes
    close: bool


def http_request(
    method: str,
    target: str,
    *,
    body: bytes = b"",
    close: bool = False,
    version: str = "1.1",
    form: bool = False,
) -> bytes:
    lines = [f"{method} {target} HTTP/{version}", f"Host: {HOST}"]
    if close and version == "1.1":
        lines.append("Connection: close")
    if form:
        lines.append("Content-Type: application/x-www-form-urlencoded")
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_response(stream: trio.SocketStream, buffer: bytearray) -> Response:
    """One response from ``buffer`` plus what arrives; what follows it stays in ``buffer``."""
    while True:
        end = buffer.find(b"\r\n\r\n")
        if end >= 0:
            head = bytes(buffer[:end]).decode("latin-1").split("\r\n")
            status = int(head[0].split(" ", 2)[1])
            headers = {}
            for line in head[1:]:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip().lower()
            length = int(headers.get("content-length", "0"))
            total = end + 4 + length
            if len(buffer) >= total:
                body = bytes(buffer[end + 4 : total])
                del buffer[:total]
                return Response(status, body, headers.get("connection") == "close")
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise Closed("the server closed the connection before a whole response")
        buffer += chunk


async def until_closed(stream: trio.SocketStream) -> bytes:
    """Read until EOF or a reset: what came before it."""
    received = bytearray()
    while True:
        try:
            chunk = await stream.receive_some(65536)
        except _TRANSPORT_ERRORS:
            return bytes(received)
        if not chunk:
            return bytes(received)
        received += chunk


def abort(stream: trio.SocketStream) -> None:
    """The next close sends a reset (RST), as a crashing client's does."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


# --------------------------------------------------------------------------------------
# The books


@dataclasses.dataclass
class Books:
    requests: int = 0  # well-behaved requests answered
    close_mode: int = 0  # of which on a connection of their own
    statuses: Counter[int] = dataclasses.field(default_factory=Counter)
    misbehaving: Counter[str] = dataclasses.field(default_factory=Counter)
    unexpected: Counter[str] = dataclasses.field(default_factory=Counter)
    examples: dict[str, list[str]] = dataclasses.field(default_factory=lambda: collections.defaultdict(list))
    acknowledged: Counter[str] = dataclasses.field(default_factory=Counter)
    might_have_counted: Counter[str] = dataclasses.field(default_factory=Counter)
    models: dict[str, int | None] = dataclasses.field(default_factory=dict)
    timings: dict[str, list[float]] = dataclasses.field(default_factory=lambda: collections.defaultdict(list))

    def error(self, kind: str, detail: str) -> None:
        self.unexpected[kind] += 1
        if len(self.examples[kind]) < 3:
            self.examples[kind].append(detail)

    def sending_inc(self, name: str) -> None:
        """A whole /inc is about to go out: from here it might count."""
        self.might_have_counted[name] += 1

    def answered_inc(self, name: str, status: int) -> None:
        self.might_have_counted[name] -= 1
        if status == 200:
            self.acknowledged[name] += 1


# --------------------------------------------------------------------------------------
# Well-behaved clients


class KeepAliveClient:
    """One keep-alive connection at a time (a new one when the server asks to close)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stream: trio.SocketStream | None = None
        self.buffer = bytearray()
        #: Where the current request is, for reporting one that never ends.
        self.phase = ""
        self.served = 0  # requests answered on the current connection

    async def request(self, data: bytes) -> Response:
        if self.stream is None:
            self.phase = "connecting"
            self.stream = await trio.open_tcp_stream(HOST, self.port)
            self.buffer = bytearray()
            self.served = 0
        try:
            self.phase = f"sending request {self.served + 1} of a keep-alive connection"
            await self.stream.send_all(data)
            self.phase = f"awaiting the answer to request {self.served + 1} of a keep-alive connection"
            response = await read_response(self.stream, self.buffer)
            self.served += 1
        except BaseException:
            await self.aclose()
            raise
        if response.close:  # hypercorn's keep_alive_max_requests (1000) was reached
            await self.aclose()
        return response

    async def aclose(self) -> None:
        if self.stream is not None:
            stream, self.stream = self.stream, None
            with trio.CancelScope(shield=True):
                await stream.aclose()


async def close_mode_request(port: int, data: bytes, phase: list[str] | None = None) -> Response:
    """A request on a connection of its own, which the server must then close.
    ``phase[0]`` says where it is, for reporting one that never ends."""
    phase = phase if phase is not None else [""]
    phase[0] = "connecting (close mode)"
    stream = await trio.open_tcp_stream(HOST, port)
    async with stream:
        phase[0] = "sending (close mode)"
        await stream.send_all(data)
        buffer = bytearray()
        phase[0] = "awaiting the answer (close mode)"
        response = await read_response(stream, buffer)
        phase[0] = "answered, awaiting the server's close (close mode)"
        rest = await until_closed(stream)
    if buffer or rest:
        raise Closed(f"bytes after the response: {bytes(buffer + rest)[:60]!r}")
    return response


class WellBehaved:
    """Mixed traffic from one client; every answer is checked."""

    def __init__(self, port: int, books: Books, ident: int, rng: random.Random, close_mode: bool) -> None:
        self.port = port
        self.books = books
        self.rng = rng
        self.close_mode = close_mode
        self.owned = [f"soak-o-{ident}-{n}" for n in range(5)]
        for name in self.owned:
            books.models[name] = None
        self.connection = KeepAliveClient(port)

    async def _send(self, data: bytes) -> Response:
        phase = [""]
        try:
            with trio.fail_after(REQUEST_TIMEOUT):
                if self.close_mode:
                    response = await close_mode_request(self.port, data, phase)
                    self.books.close_mode += 1
                else:
                    response = await self.connection.request(data)
        except trio.TooSlowError:
            where = phase[0] if self.close_mode else self.connection.phase
            line = data.split(b"\r\n", 1)[0].decode()
            self.books.error("well-behaved request timed out", f"{line!r}: {where} after {REQUEST_TIMEOUT:g} s")
            raise
        self.books.requests += 1
        if response.status != 200:
            self.books.statuses[response.status] += 1
        return response

    def _expect(self, what: str, response: Response, status: int, body: bytes | None = None) -> None:
        if response.status != status or (body is not None and response.body != body):
            self.books.error(
                f"wrong answer to {what}", f"expected {status} {body!r}, got {response.status} {response.body!r}"
            )

    async def one(self) -> None:
        rng = self.rng
        choice = rng.random()
        version = "1.0" if self.close_mode and rng.random() < 0.5 else "1.1"
        close = self.close_mode

        def req(method: str, target: str, **kwargs: object) -> bytes:
            return http_request(method, target, close=close, version=version, **kwargs)  # type: ignore[arg-type]

        if choice < 0.40:  # inc a shared counter
            name = rng.choice(SHARED)
            self.books.sending_inc(name)
            response = await self._send(req("GET", f"/inc?name={name}"))
            self.books.answered_inc(name, response.status)
            self._expect("inc", response, 200, b"ok\n")
        elif choice < 0.45:  # the same, as a form POST
            name = rng.choice(SHARED)
            self.books.sending_inc(name)
            response = await self._send(req("POST", "/inc", body=f"name={name}".encode(), form=True))
            self.books.answered_inc(name, response.status)
            self._expect("form inc", response, 200, b"ok\n")
        elif choice < 0.55:  # inc a disrupted counter
            name = rng.choice(DISRUPTED)
            self.books.sending_inc(name)
            response = await self._send(req("GET", f"/inc?name={name}"))
            self.books.answered_inc(name, response.status)
            self._expect("inc", response, 200, b"ok\n")
        elif choice < 0.65:  # set an owned counter
            name = rng.choice(self.owned)
            value = rng.randrange(-(2**40), 2**40)
            response = await self._send(req("GET", f"/set?name={name}&val={value}"))
            self._expect("set", response, 200, b"ok\n")
            if response.status == 200:
                self.books.models[name] = value
        elif choice < 0.75:  # inc an owned counter (404 until it is set)
            name = rng.choice(self.owned)
            response = await self._send(req("GET", f"/inc?name={name}"))
            model = self.books.models[name]
            if model is None:
                self._expect("inc of an unset counter", response, 404)
            else:
                self._expect("inc", response, 200, b"ok\n")
                if response.status == 200:
                    self.books.models[name] = model + 1
        elif choice < 0.90:  # get an owned counter: must match the model
            name = rng.choice(self.owned)
            response = await self._send(req("GET", f"/get?name={name}"))
            model = self.books.models[name]
            if model is None:
                self._expect("get of an unset counter", response, 404)
            else:
                self._expect("get", response, 200, f"{name}: {model}\n".encode())
        elif choice < 0.95:  # get a counter that does not exist
            response = await self._send(req("GET", f"/get?name=soak-missing-{rng.randrange(10**6)}"))
            self._expect("get of a missing counter", response, 404)
        else:  # a value that is not an integer
            response = await self._send(req("GET", f"/set?name={rng.choice(self.owned)}&val=1.5"))
            self._expect("set with a bad value", response, 400)

    async def run(self, stopping: trio.Event) -> None:
        try:
            while not stopping.is_set():
                try:
                    await self.one()
                except trio.TooSlowError:
                    pass  # booked by _send
                except (*_TRANSPORT_ERRORS, Closed) as error:
                    self.books.error("well-behaved connection broke", repr(error))
        finally:
            await self.connection.aclose()


# --------------------------------------------------------------------------------------
# Misbehaving clients


def _form_post(target: str, length: int, body: bytes) -> bytes:
    return (
        f"POST {target} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode() + body


class Misbehaving:
    """Each method is one misbehaving connection, checked against what the server must do."""

    def __init__(self, port: int, books: Books, keep_alive: float, rng: random.Random) -> None:
        self.port = port
        self.books = books
        self.keep_alive = keep_alive
        self.rng = rng

    async def _reaped(self, kind: str, data: bytes, *, interval: float = 0.0) -> None:
        """Send ``data`` (a byte per ``interval`` if given), never finish; the server
        must close the connection at its keep-alive deadline, without answering."""
        start = trio.current_time()
        stream = await trio.open_tcp_stream(HOST, self.port)
        async with stream:

            async def trickle() -> None:
                for byte in data:
                    try:
                        await stream.send_all(bytes([byte]))
                    except _TRANSPORT_ERRORS:
                        return  # closed by the server: what we are waiting for
                    await trio.sleep(interval)

            with trio.move_on_after(self.keep_alive + SLACK) as deadline:
                if interval:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(trickle)
                        received = await until_closed(stream)
                        nursery.cancel_scope.cancel()
                else:
                    if data:
                        await stream.send_all(data)
                    received = await until_closed(stream)
        seconds = trio.current_time() - start
        if deadline.cancelled_caught:
            self.books.error(f"{kind}: not closed", f"still open after {seconds:.1f} s")
        elif received:
            self.books.error(f"{kind}: answered", repr(received[:60]))
        elif seconds < self.keep_alive - 0.05:
            self.books.error(f"{kind}: closed early", f"after {seconds:.2f} s")
        else:
            self.books.misbehaving[kind] += 1
            self.books.timings[kind].append(seconds)

    async def idle(self) -> None:
        await self._reaped("idle connection", b"")

    async def half_request(self) -> None:
        data = self.rng.choice(
            [
                b"GET /inc?na",
                b"GET /inc?name=soak-s-0 HTTP/1.1\r\n",
                b"GET /inc?name=soak-s-0 HTTP/1.1\r\nHost: x\r\nX-A: ",
            ]
        )
        await self._reaped("half-sent request", data)

    async def slowloris(self) -> None:
        head = b"GET /inc?name=soak-s-0 HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 200 + b"\r\n\r\n"
        await self._reaped("slowloris (a byte per 0.5 s)", head, interval=0.5)

    async def unfinished_body(self) -> None:
        kind = "unfinished POST body"
        stream = await trio.open_tcp_stream(HOST, self.port)
        start = trio.current_time()
        async with stream:
            await stream.send_all(_form_post("/inc", 100, b"name=soak-s-0&pad="))
            with trio.move_on_after(BODY_TIMEOUT + SLACK) as deadline:
                received = await until_closed(stream)
        if deadline.cancelled_caught or not received.startswith(b"HTTP/1.1 408"):
            self.books.error(f"{kind}: no 408", repr(received[:60]))
        else:
            self.books.statuses[408] += 1
            self.books.misbehaving[kind] += 1
            self.books.timings[kind].append(trio.current_time() - start)

    async def _refused(self, kind: str, data: bytes, allowed: set[int | None], deadline: float = SLACK) -> None:
        """Send ``data``; the answer must be one of ``allowed`` (None: closed without one)."""
        stream = await trio.open_tcp_stream(HOST, self.port)
        async with stream:
            try:
                await stream.send_all(data)
            except _TRANSPORT_ERRORS:
                pass
            buffer = bytearray()
            status: int | None
            with trio.move_on_after(deadline) as scope:
                try:
                    status = (await read_response(stream, buffer)).status
                except (Closed, *_TRANSPORT_ERRORS):
                    status = None
        if scope.cancelled_caught:
            self.books.error(f"{kind}: hung", f"no answer or close within {deadline:g} s")
        elif status not in allowed:
            self.books.error(f"{kind}: got {status}", f"allowed {sorted(map(str, allowed))}")
        else:
            self.books.misbehaving[kind] += 1
            if status is not None:
                self.books.statuses[status] += 1

    async def garbage(self) -> None:
        rng = self.rng
        case = rng.randrange(5)
        if case == 0:
            await self._refused("garbage: text", b"HELLO SERVER\r\n\r\n", {400})
        elif case == 1:
            await self._refused("garbage: NUL bytes", b"\x00" * rng.randrange(1, 2048), {400})
        elif case == 2:
            await self._refused("garbage: bare CRLF CRLF", b"\r\n\r\n", {400})
        elif case == 3:  # may hold no line end: then only the keep-alive timer ends it
            await self._refused(
                "garbage: random bytes", rng.randbytes(rng.randrange(1, 4096)), {400, None},
                deadline=self.keep_alive + SLACK,
            )  # fmt: skip
        else:
            await self._refused(
                "garbage: bad Content-Length",
                b"POST /inc?name=soak-s-0 HTTP/1.1\r\nHost: x\r\nContent-Length: lots\r\n\r\n",
                {400},
            )

    async def oversized(self) -> None:
        rng = self.rng
        case = rng.randrange(5)
        if case == 0:
            await self._refused(
                "oversized: query string", http_request("GET", "/inc?name=soak-s-0&pad=" + "p" * MAX_QUERY_BYTES), {414}
            )
        elif case == 1:
            big = b"X-Big: " + b"b" * (MAX_RECV + 4096) + b"\r\n"
            data = b"GET /inc?name=soak-s-0 HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n"
            # hypercorn answers 431 after its first 64 KiB read and closes with the rest
            # unread, so the kernel may reset the connection before the answer is read.
            await self._refused("oversized: headers over 64 KiB", data, {431, None})
        elif case == 2:
            data = b"GET /inc?name=soak-s-0 HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * (H11_MAX_INCOMPLETE + 1024)
            await self._refused("oversized: unfinished head over 16 KiB", data, {431})
        elif case == 3:
            body = b"name=soak-s-0&pad=" + b"p" * MAX_BODY_BYTES
            await self._refused("oversized: form body", _form_post("/inc", len(body), body), {413})
        else:
            await self._refused("unknown path", http_request("GET", f"/x{rng.randrange(10**9)}"), {404})

    STAGES = (
        "connected, nothing sent",
        "mid request line",
        "mid headers",
        "mid form body",
        "whole request sent",
        "mid reply (status line read)",
        "two pipelined, first answer read",
    )

    async def disconnect(self) -> None:
        """An /inc of a disrupted counter, abandoned at a random stage (closed or reset)."""
        rng = self.rng
        name = rng.choice(DISRUPTED)
        request = http_request("GET", f"/inc?name={name}")
        stage = rng.randrange(len(self.STAGES))
        kind = f"disconnect: {self.STAGES[stage]}"
        stream = await trio.open_tcp_stream(HOST, self.port)
        try:
            if stage == 0:  # connected, nothing sent
                pass
            elif stage == 1:  # mid request line
                await stream.send_all(request[: rng.randrange(1, 15)])
            elif stage == 2:  # mid headers
                await stream.send_all(request[: len(request) - 3])
            elif stage == 3:  # mid body: the name is in, the rest never comes
                body = f"name={name}&pad=never".encode()
                await stream.send_all(_form_post("/inc", len(body), body[: len(name) + 5]))
            elif stage == 4:  # whole request, then gone
                self.books.sending_inc(name)
                await stream.send_all(request)
            elif stage == 5:  # whole request, status line read, then gone mid-reply
                self.books.sending_inc(name)
                await stream.send_all(request)
                received = bytearray()
                with trio.move_on_after(REQUEST_TIMEOUT):
                    while len(received) < 12:
                        chunk = await stream.receive_some(65536)
                        if not chunk:
                            break
                        received += chunk
                if received.startswith(b"HTTP/1.1 200"):
                    self.books.answered_inc(name, 200)
                elif received:
                    self.books.error("disconnect: unexpected answer", repr(bytes(received[:60])))
            else:  # two pipelined, gone after the first answer
                self.books.sending_inc(name)
                self.books.sending_inc(name)
                await stream.send_all(request + request)
                with trio.move_on_after(REQUEST_TIMEOUT):
                    response = await read_response(stream, bytearray())
                    self.books.answered_inc(name, response.status)
                    if response.status != 200:
                        self.books.error("disconnect: unexpected answer", str(response.status))
            self.books.misbehaving[kind] += 1
        except (*_TRANSPORT_ERRORS, Closed):
            self.books.misbehaving[kind] += 1
        finally:
            if rng.random() < 0.5:
                abort(stream)
            with trio.CancelScope(shield=True):
                await stream.aclose()


async def loop(action: Callable[[], Awaitable[None]], stopping: trio.Event, books: Books, kind: str) -> None:
    while not stopping.is_set():
        try:
            await action()
        except (*_TRANSPORT_ERRORS, Closed) as error:
            books.error(f"{kind}: connection failed", repr(error))


# --------------------------------------------------------------------------------------
# The run


async def read_back(port: int, names: list[str]) -> dict[str, int | None]:
    client = KeepAliveClient(port)
    values: dict[str, int | None] = {}
    try:
        for name in names:
            with trio.fail_after(REQUEST_TIMEOUT):
                response = await client.request(http_request("GET", f"/get?name={name}"))
            if response.status == 404:
                values[name] = None
            elif response.status == 200:
                values[name] = int(response.body.decode().rsplit(": ", 1)[1])
            else:
                raise RuntimeError(f"/get?name={name} answered {response.status}")
    finally:
        await client.aclose()
    return values


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


async def soak(args: argparse.Namespace) -> int:
    books = Books()
    rng = random.Random(args.seed)
    problems: list[str] = []
    server_args = ("--keep-alive", f"{args.keep_alive:g}")
    print(f"soak: strategy {args.strategy}, {args.seconds:g} s (warm-up {args.warmup:g} s), "
          f"hypercorn --keep-alive {args.keep_alive:g}, transport "
          f"{os.environ.get('TRIO_COUNTERS_TRANSPORT', '(default)')}", flush=True)  # fmt: skip
    async with running_server(args.strategy, args=server_args) as server:
        rss = {"start": rss_kib(server.worker)}
        samples: list[tuple[float, int]] = []
        for name in SHARED + DISRUPTED:
            response = await close_mode_request(server.port, http_request("GET", f"/set?name={name}&val=0", close=True))
            assert response.status == 200, response
        stopping = trio.Event()
        start = trio.current_time()
        cpu_start = (cpu_seconds(server.worker), time.process_time())

        async def sample_rss() -> None:
            while True:
                samples.append((trio.current_time() - start, rss_kib(server.worker)))
                await trio.sleep(1)

        async def progress() -> None:
            while True:
                await trio.sleep(10)
                print(f"  {trio.current_time() - start:5.0f} s: {books.requests} requests, "
                      f"{sum(books.misbehaving.values())} misbehaving connections, "
                      f"{sum(books.unexpected.values())} unexpected, RSS {_mib(rss_kib(server.worker))}",
                      flush=True)  # fmt: skip

        with trio.fail_after(args.seconds + BODY_TIMEOUT + 3 * SLACK + 30):
            async with trio.open_nursery() as background:
                background.start_soon(sample_rss)
                background.start_soon(progress)
                # Clients whose books must balance stop between requests...
                async with trio.open_nursery() as balanced:
                    for ident in range(args.clients):
                        close_mode = ident % 4 == 3
                        client = WellBehaved(server.port, books, ident, random.Random(rng.random()), close_mode)
                        balanced.start_soon(client.run, stopping)
                    bad = Misbehaving(server.port, books, args.keep_alive, random.Random(rng.random()))
                    for _ in range(4):
                        balanced.start_soon(loop, bad.disconnect, stopping, books, "disconnect")
                    # ...the others are just cancelled.
                    async with trio.open_nursery() as unbalanced:
                        for action, copies in (
                            (bad.idle, 30), (bad.half_request, 6), (bad.slowloris, 2),
                            (bad.unfinished_body, 2), (bad.garbage, 2), (bad.oversized, 2),
                        ):  # fmt: skip
                            for _ in range(copies):
                                unbalanced.start_soon(loop, action, stopping, books, action.__name__)
                        await trio.sleep(args.warmup)
                        rss["after warm-up"] = rss_kib(server.worker)
                        await trio.sleep(max(0.0, args.seconds - args.warmup))
                        stopping.set()
                        unbalanced.cancel_scope.cancel()
                elapsed = trio.current_time() - start
                rss["end"] = rss_kib(server.worker)
                cpu = (cpu_seconds(server.worker) - cpu_start[0], time.process_time() - cpu_start[1])
                background.cancel_scope.cancel()
            finals = await read_back(server.port, SHARED + DISRUPTED + sorted(books.models))
            stats = await close_mode_request(server.port, http_request("GET", "/stats", close=True))

    # ---- the report
    print(f"\nrequests (well-behaved): {books.requests} in {elapsed:.1f} s, {books.requests / elapsed:.0f}/s "
          f"({books.close_mode} on connections of their own)")  # fmt: skip
    print(f"CPU: server worker {cpu[0]:.1f} s ({cpu[0] / elapsed * 100:.0f} % of one core), "
          f"this client {cpu[1]:.1f} s ({cpu[1] / elapsed * 100:.0f} %)")  # fmt: skip
    print("refusals by status: " + (", ".join(f"{s}: {n}" for s, n in sorted(books.statuses.items())) or "none"))
    print("misbehaving connections, each handled as it must be:")
    for kind, count in sorted(books.misbehaving.items()):
        timing = books.timings.get(kind)
        extra = f"  (closed after {min(timing):.2f}-{max(timing):.2f} s)" if timing else ""
        print(f"  {kind}: {count}{extra}")
    print(f"unexpected errors: {sum(books.unexpected.values())}")
    for kind, count in sorted(books.unexpected.items()):
        print(f"  {kind}: {count}, e.g. " + "; ".join(books.examples[kind]))
        problems.append(f"{count} x {kind}")

    exact = sum(1 for name in SHARED if finals[name] == books.acknowledged[name])
    print(f"shared counters (acknowledged increments only): {exact}/{len(SHARED)} exact, "
          f"{sum(books.acknowledged[name] for name in SHARED)} increments")  # fmt: skip
    for name in SHARED:
        if finals[name] != books.acknowledged[name]:
            pending = books.might_have_counted[name]
            problems.append(f"{name}: final {finals[name]}, acknowledged {books.acknowledged[name]} (+{pending} unanswered)")
    low = sum(books.acknowledged[name] for name in DISRUPTED)
    high = low + sum(books.might_have_counted[name] for name in DISRUPTED)
    total = sum(finals[name] or 0 for name in DISRUPTED)
    inside = all(
        books.acknowledged[name] <= (finals[name] or 0) <= books.acknowledged[name] + books.might_have_counted[name]
        for name in DISRUPTED
    )
    print(f"disrupted counters: final {total} within [acknowledged {low}, + might have counted = {high}]: "
          f"{'yes' if inside else 'NO'} for every one of {len(DISRUPTED)}")  # fmt: skip
    if not inside:
        for name in DISRUPTED:
            problems.append(
                f"{name}: final {finals[name]}, acknowledged {books.acknowledged[name]}, "
                f"might have counted {books.might_have_counted[name]}"
            )
    wrong_owned = [name for name, model in books.models.items() if finals[name] != model]
    print(f"owned counters (set/inc/get by one client): {len(books.models) - len(wrong_owned)}/{len(books.models)} "
          f"equal the client's model")  # fmt: skip
    problems += [f"{name}: final {finals[name]}, model {books.models[name]}" for name in wrong_owned]

    if stats.status == 200:
        try:
            counters = json.loads(stats.body).get("counters")
            print(f"/stats: {counters} counters")
        except (ValueError, AttributeError):
            pass
    growth = (rss["end"] - rss["after warm-up"]) / rss["after warm-up"] * 100
    peak = max(kib for _, kib in samples) if samples else rss["end"]
    print(f"worker RSS (pid {server.worker}): start {_mib(rss['start'])}, after warm-up "
          f"{_mib(rss['after warm-up'])}, end {_mib(rss['end'])}, peak {_mib(peak)}; "
          f"growth after warm-up {growth:+.1f} %")  # fmt: skip
    if growth >= MAX_RSS_GROWTH:
        problems.append(f"RSS grew {growth:.1f} % after warm-up (limit {MAX_RSS_GROWTH:g} %)")
    print(f"server: exit code {server.exit_code}, {len(server.log.unexpected)} unexpected tracebacks in its log, "
          f"{server.log.known_races} of hypercorn's known close race (the client had its answer)")  # fmt: skip
    if server.exit_code != 0:
        problems.append(f"the server exited with {server.exit_code}")
    for record in server.log.unexpected[:3]:
        problems.append("traceback in the server log:\n" + record[-3000:])
    if len(server.log.unexpected) > 3:
        problems.append(f"... and {len(server.log.unexpected) - 3} more tracebacks")

    if problems:
        print("\nFAILED:")
        for problem in problems[:40]:
            print(f"  - {problem}")
        return 1
    print("\nclean: no unexpected errors, exact counts, RSS bounded")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the traffic runs (default 60)")
    parser.add_argument("--strategy", default="lock", help="the store: lock (default), channel, naive, ...")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before the warm RSS sample (default 10)")
    parser.add_argument("--keep-alive", type=float, default=5.0, help="hypercorn --keep-alive (default 5, its own)")
    parser.add_argument("--clients", type=int, default=24, help="well-behaved clients; every 4th in close mode")
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args(argv)
    if args.warmup >= args.seconds:
        parser.error("--warmup must be shorter than --seconds")
    if args.strategy == "naive":
        print("note: naive loses updates on purpose; expect its shared counters to come out low", flush=True)
    try:
        return trio.run(soak, args)
    except BaseException as error:  # Ctrl-C: the server is already stopped by now
        if only_interrupts(error):
            print("interrupted", file=sys.stderr)
            return 130
        raise


def only_interrupts(error: BaseException) -> bool:
    """Whether ``error`` is Ctrl-C alone (a KeyboardInterrupt, or a group of only those)."""
    if isinstance(error, BaseExceptionGroup):
        _, rest = error.split(KeyboardInterrupt)
        return rest is None
    return isinstance(error, KeyboardInterrupt)


if __name__ == "__main__":
    sys.exit(main())
