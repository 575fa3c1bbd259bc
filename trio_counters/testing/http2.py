"""HTTP/2 over cleartext with prior knowledge (h2c), frame by frame, for hostile requests.

:class:`H2Client` sends what h2's connection builds in client mode -- with its
checks on what it sends switched off, so any header goes out as given -- and raw
frames (:func:`frame`, :func:`header_block`) for what h2 will not send at all.
It reads the server's frames itself (hyperframe's layout, hpack), so whatever was
sent, what came back is seen: each stream's status, body, end or reset, a GOAWAY,
the close. 127.0.0.1 only; the caller bounds every wait.
"""

from __future__ import annotations

import dataclasses
import struct
from collections import defaultdict
from collections.abc import Callable

import h2.config
import h2.connection
import hpack
import trio

from .http import TRANSPORT_ERRORS
from .server import HOST

__all__ = ["H2Client", "H2Stream", "PREFACE", "frame", "header_block"]

#: What a client sends first on an HTTP/2 connection, before its SETTINGS.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame, exactly as given: nothing is checked."""
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream_id) + payload


def header_block(headers: list[tuple[bytes, bytes]]) -> bytes:
    """An HPACK block of ``headers`` as given, each a never-indexed literal, so it leaves
    the connection's compression state as it was (h2's own blocks stay decodable)."""
    return hpack.Encoder().encode([hpack.NeverIndexedHeaderTuple(name, value) for name, value in headers])


@dataclasses.dataclass
class H2Stream:
    """What the server sent on one stream."""

    status: int | None = None
    headers: list[tuple[bytes, bytes]] = dataclasses.field(default_factory=list)
    body: bytearray = dataclasses.field(default_factory=bytearray)
    ended: bool = False
    #: RST_STREAM's error code, if the server reset the stream.
    reset: int | None = None

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None


class H2Client:
    """One h2c connection to the server; see the module docstring."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=True,
                header_encoding=None,
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
                split_outbound_cookies=False,
            )
        )
        self.streams: defaultdict[int, H2Stream] = defaultdict(H2Stream)
        #: GOAWAY's error code, once the server has sent one, and its last stream id.
        self.goaway: int | None = None
        self.last_stream_id: int | None = None
        #: The server closed (or reset) the TCP connection.
        self.closed = False
        self._next_id = 1
        self._buffer = bytearray()
        self._decoder = hpack.Decoder()
        self._block: tuple[int, bytearray, bool] | None = None  # stream, fragments, end_stream
        self._pings_acked: set[bytes] = set()
        self._pings = 0
        # send() is called by a reading task too (a SETTINGS ACK): one write at a time.
        self._send_lock = trio.Lock()

    @classmethod
    async def connect(cls, port: int, host: str = HOST) -> H2Client:
        """Connect, and send the preface and h2's SETTINGS."""
        client = cls(await trio.open_tcp_stream(host, port))
        client.h2.initiate_connection()
        await client.flush()
        return client

    async def __aenter__(self) -> H2Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.stream.aclose()

    def stream_id(self) -> int:
        """A new client stream id (odd, rising), for h2's frames and raw ones alike."""
        stream_id, self._next_id = self._next_id, self._next_id + 2
        return stream_id

    async def send(self, data: bytes) -> None:
        """Raw bytes; a server that has closed is noted, not raised."""
        async with self._send_lock:
            try:
                await self.stream.send_all(data)
            except TRANSPORT_ERRORS:
                self.closed = True

    async def flush(self) -> None:
        """Send what h2's connection has built."""
        data = self.h2.data_to_send()
        if data:
            await self.send(data)

    async def request(
        self, headers: list[tuple[bytes, bytes]], *, body: bytes = b"", end_stream: bool = True
    ) -> int:
        """A request built by h2 (headers as given), on a new stream; its id."""
        stream_id = self.stream_id()
        self.h2.send_headers(stream_id, headers, end_stream=end_stream and not body)
        if body:
            self.h2.send_data(stream_id, body, end_stream=end_stream)
        await self.flush()
        return stream_id

    async def raw_request(
        self, headers: list[tuple[bytes, bytes]], *, end_stream: bool = True, stream_id: int | None = None
    ) -> int:
        """A request's HEADERS frame built by hand, for what h2 refuses to send; its stream id."""
        stream_id = self.stream_id() if stream_id is None else stream_id
        flags = END_HEADERS | (END_STREAM if end_stream else 0)
        await self.send(frame(HEADERS, flags, stream_id, header_block(headers)))
        return stream_id

    async def response(self, stream_id: int) -> H2Stream:
        """Read until the stream ends or is reset, or the server closes the connection,
        or sends GOAWAY naming a last stream below this one (it will not be answered)."""
        while not self.streams[stream_id].done and not self.closed:
            if self.last_stream_id is not None and stream_id > self.last_stream_id:
                break
            await self._receive()
        return self.streams[stream_id]

    async def settle(self) -> bool:
        """Send a PING and read until its ACK: the server has then read everything sent
        before it. False if the server closed instead, or sent GOAWAY with an error (a
        GOAWAY with NO_ERROR leaves the connection open for the answers owed)."""
        self._pings += 1
        opaque = struct.pack(">Q", self._pings)
        await self.send(frame(PING, 0, 0, opaque))
        while opaque not in self._pings_acked:
            if self.goaway or self.closed:
                return False
            await self._receive()
        return True

    async def read_until(self, done: Callable[[], bool]) -> bool:
        """Read until ``done()`` or the server closes the connection; whether ``done()``."""
        while not done() and not self.closed:
            await self._receive()
        return done()

    async def read_to_close(self) -> None:
        """Read until the server closes the connection (a GOAWAY is noted on the way)."""
        while not self.closed:
            await self._receive()

    async def _receive(self) -> None:
        try:
            data = await self.stream.receive_some(65536)
        except TRANSPORT_ERRORS:
            data = b""
        if not data:
            self.closed = True
            return
        self._buffer += data
        while len(self._buffer) >= 9:
            length = int.from_bytes(self._buffer[:3], "big")
            if len(self._buffer) < 9 + length:
                break
            kind, flags = self._buffer[3], self._buffer[4]
            stream_id = int.from_bytes(self._buffer[5:9], "big") & 0x7FFFFFFF
            payload = bytes(self._buffer[9 : 9 + length])
            del self._buffer[: 9 + length]
            await self._frame(kind, flags, stream_id, payload)

    async def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if kind == DATA:
            self.streams[stream_id].body += _unpadded(flags, payload)
            self.streams[stream_id].ended |= bool(flags & END_STREAM)
        elif kind == HEADERS:
            payload = _unpadded(flags, payload)
            if flags & PRIORITY_FLAG:
                payload = payload[5:]
            self._block = (stream_id, bytearray(payload), bool(flags & END_STREAM))
            if flags & END_HEADERS:
                self._headers_done()
        elif kind == CONTINUATION and self._block is not None:
            self._block[1].extend(payload)
            if flags & END_HEADERS:
                self._headers_done()
        elif kind == RST_STREAM:
            self.streams[stream_id].reset = int.from_bytes(payload[:4], "big")
        elif kind == SETTINGS and not flags & ACK:
            await self.send(frame(SETTINGS, ACK, 0))
        elif kind == PING and flags & ACK:
            self._pings_acked.add(payload)
        elif kind == GOAWAY:
            self.last_stream_id = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            self.goaway = int.from_bytes(payload[4:8], "big")

    def _headers_done(self) -> None:
        assert self._block is not None
        stream_id, block, end_stream = self._block
        self._block = None
        stream = self.streams[stream_id]
        headers = [(bytes(name), bytes(value)) for name, value in self._decoder.decode(bytes(block), raw=True)]
        status = dict(headers).get(b":status")
        if status is not None and int(status) >= 200:
            stream.status = int(status)
            stream.headers = headers
        stream.ended |= end_stream


def _unpadded(flags: int, payload: bytes) -> bytes:
    if flags & PADDED:
        return payload[1 : len(payload) - payload[0]]
    return payload
