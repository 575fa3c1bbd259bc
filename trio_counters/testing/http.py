"""Raw HTTP/1.1 over trio sockets, for talking to the real server.

Two levels, both on plain trio sockets to 127.0.0.1:

* :class:`Connection` and :func:`request` speak HTTP/1.1 through h11, as curl and
  ab do (HTTP/1.0 without keep-alive included), and return a :class:`Reply`.
* :class:`Raw`, :func:`exchange`, :func:`read_until_closed` and :func:`abort` work
  with bytes: requests no client library would send (garbage, oversized heads,
  half-sent requests, pipelining, a reset instead of a close), and a reader that
  reports what came back and whether the server closed.
"""

from __future__ import annotations

import dataclasses
import socket
import struct

import h11
import trio

from .server import HOST

__all__ = [
    "TRANSPORT_ERRORS",
    "Reply",
    "Connection",
    "request",
    "value_of",
    "RawResponse",
    "Raw",
    "Outcome",
    "exchange",
    "read_until_closed",
    "abort",
    "get_bytes",
    "form_post_bytes",
]

#: What a client sees when the server closes or resets under it.
TRANSPORT_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)

_RECEIVE_SIZE = 65536


# --------------------------------------------------------------------------------------
# Through h11


@dataclasses.dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: str


class Connection:
    """One keep-alive connection; ``request()`` may be called again and again."""

    def __init__(self, stream: trio.SocketStream, host: str) -> None:
        self.stream = stream
        self.host = host
        self.h11 = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, port: int, host: str = HOST) -> Connection:
        return cls(await trio.open_tcp_stream(host, port), f"{host}:{port}")

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def request(
        self,
        target: str,
        *,
        method: str = "GET",
        headers: list[tuple[str, str]] | tuple[()] = (),
        body: bytes = b"",
    ) -> Reply:
        if self.h11.our_state is h11.DONE:
            self.h11.start_next_cycle()
        all_headers = [("Host", self.host), *headers]
        if body:
            all_headers.append(("Content-Length", str(len(body))))
        data = self.h11.send(h11.Request(method=method, target=target, headers=all_headers))
        if body:
            data += self.h11.send(h11.Data(data=body))
        data += self.h11.send(h11.EndOfMessage())
        await self.stream.send_all(data)
        return await self._read_reply()

    async def _read_reply(self) -> Reply:
        response: h11.Response | None = None
        body = bytearray()
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as error:  # e.g. EOF before the reply
                raise ConnectionError(f"server closed the connection before replying: {error}") from None
            if event is h11.NEED_DATA:
                self.h11.receive_data(await self.stream.receive_some(_RECEIVE_SIZE))
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert response is not None
                return Reply(
                    status=response.status_code,
                    headers={k.decode().lower(): v.decode() for k, v in response.headers},
                    body=body.decode(),
                )
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("server closed the connection before replying")


async def request(port: int, target: str, **kwargs: object) -> Reply:
    """One request on a connection of its own."""
    async with await Connection.open(port) as connection:
        return await connection.request(target, **kwargs)  # type: ignore[arg-type]


async def value_of(port: int, name: str) -> int | None:
    """The counter's value (``/get`` answers ``NAME: VALUE``), or None if it does not exist."""
    reply = await request(port, f"/get?name={name}")
    if reply.status == 404:
        return None
    assert reply.status == 200, reply
    return int(reply.body.rsplit(": ", 1)[1])


# --------------------------------------------------------------------------------------
# Bytes


def get_bytes(target: str, *headers: str, version: str = "1.1") -> bytes:
    """A GET request's bytes, with ``Host`` and any extra header lines."""
    lines = [f"GET {target} HTTP/{version}", f"Host: {HOST}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def form_post_bytes(
    target: str, body: bytes = b"", *headers: str, length: int | None = None, version: str = "1.1"
) -> bytes:
    """A form POST's head announcing ``length`` body bytes (``len(body)`` by default), then ``body``."""
    lines = [
        f"POST {target} HTTP/{version}",
        f"Host: {HOST}",
        *headers,
        "Content-Type: application/x-www-form-urlencoded",
        f"Content-Length: {len(body) if length is None else length}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclasses.dataclass
class RawResponse:
    status: int
    headers: dict[bytes, bytes]
    body: bytes

    @property
    def close(self) -> bool:
        """The server said it will close the connection after this response."""
        return self.headers.get(b"connection", b"").lower() == b"close"


class Raw:
    """One client connection, bytes in and out, with a strict HTTP/1.1 response reader.

    What arrives after a response stays buffered for the next one, so pipelined
    answers are read one by one.
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    @classmethod
    async def connect(cls, port: int, host: str = HOST) -> Raw:
        return cls(await trio.open_tcp_stream(host, port))

    async def __aenter__(self) -> Raw:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _more(self) -> bool:
        try:
            chunk = await self.stream.receive_some(_RECEIVE_SIZE)
        except trio.BrokenResourceError:  # reset by the peer: closed too
            chunk = b""
        self.buffer += chunk
        return bool(chunk)

    async def response(self, *, to_head: bool = False) -> RawResponse:
        """The next response (a 1xx included); raises EOFError if the server closes first.

        ``to_head``: the response answers a HEAD request, so it has no body whatever
        its ``Content-Length`` says.
        """
        while b"\r\n\r\n" not in self.buffer:
            if not await self._more():
                raise EOFError(f"closed before a response; got {bytes(self.buffer)!r}")
        head, _, _ = bytes(self.buffer).partition(b"\r\n\r\n")
        del self.buffer[: len(head) + 4]
        status_line, *lines = head.split(b"\r\n")
        status = int(status_line.split()[1])
        headers = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        length = 0 if status < 200 or to_head else int(headers.get(b"content-length", b"0"))
        while len(self.buffer) < length:
            if not await self._more():
                raise EOFError("closed in the middle of a body")
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        return RawResponse(status, headers, body)

    async def until(self, marker: bytes) -> None:
        while marker not in self.buffer:
            if not await self._more():
                raise EOFError(f"closed before {marker!r}; got {bytes(self.buffer)!r}")

    async def closed(self) -> bytes:
        """Read until the server closes the connection; what came before the close."""
        while await self._more():
            pass
        return bytes(self.buffer)

    def abort(self) -> None:
        """Make the next close a reset: see :func:`abort`."""
        abort(self.stream)

    async def aclose(self) -> None:
        await self.stream.aclose()


@dataclasses.dataclass
class Outcome:
    """What one raw exchange got back."""

    #: The response's status, or None if none came.
    status: int | None
    #: The server ended the connection (EOF or reset) before the deadline.
    closed: bool
    #: Seconds from the first byte sent to the response, or to the close if one was awaited.
    seconds: float
    head: bytes = b""

    def __str__(self) -> str:
        ending = "closed" if self.closed else "kept open"
        return f"{self.status or 'no answer'}, {ending}, {self.seconds:.2f} s"


def _parse_response(data: bytes) -> tuple[int, bytes] | None:
    """(status, head) once a whole response is in ``data``."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = data[:end]
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-length":
            length = int(value)
    return (status, head) if len(data) >= end + 4 + length else None


async def exchange(port: int, data: bytes, *, deadline: float) -> Outcome:
    """Send raw bytes; read one response. If the server says it will close (or does
    not answer at all), wait for that close too, up to ``deadline`` seconds."""
    start = trio.current_time()
    received = bytearray()
    status: int | None = None
    head = b""
    closed = False
    async with await trio.open_tcp_stream(HOST, port) as stream:
        try:
            await stream.send_all(data)
        except TRANSPORT_ERRORS:
            pass  # the server stopped reading (and answered, or closed): see below
        with trio.move_on_after(deadline):
            while True:
                try:
                    chunk = await stream.receive_some(_RECEIVE_SIZE)
                except TRANSPORT_ERRORS:
                    chunk = b""  # a reset: the server is gone from this connection
                if not chunk:
                    closed = True
                    break
                received += chunk
                parsed = _parse_response(bytes(received)) if status is None else None
                if parsed is not None:
                    status, head = parsed
                    if b"connection: close" not in head.lower():
                        break  # a keep-alive answer: nothing more to wait for
        if status is None and received:
            head = bytes(received).split(b"\r\n", 1)[0]
            if head.startswith(b"HTTP/1.1 "):
                status = int(head.split(b" ", 2)[1])
    return Outcome(status, closed, trio.current_time() - start, head)


async def read_until_closed(stream: trio.SocketStream) -> bytes:
    """Read until EOF or a reset: what came before it."""
    received = bytearray()
    while True:
        try:
            chunk = await stream.receive_some(_RECEIVE_SIZE)
        except TRANSPORT_ERRORS:
            return bytes(received)
        if not chunk:
            return bytes(received)
        received += chunk


def abort(stream: trio.SocketStream) -> None:
    """Make the next close a TCP reset (RST), as a crashing client's does."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
