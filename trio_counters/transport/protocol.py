"""hypercorn's HTTP/1.1 and HTTP/2 protocols, refusing what they would mishandle.

:class:`GuardedProtocolWrapper` is hypercorn's ``ProtocolWrapper`` with these
protocols in place of its own, for both transports. What each refuses, with 400
and a one-line ``text/plain`` body, before the app or hypercorn's request
handling sees it:

* HTTP/1.1 (:class:`GuardedH11Protocol`), then closing the connection: a
  WebSocket upgrade (the API has none, and hypercorn's WebSocket path over
  HTTP/1.1 can hold a connection open for ever or fail on bytes sent after the
  handshake); a request with both ``Content-Length`` and ``Transfer-Encoding``
  (RFC 9112 section 6.1: a request smuggled inside the body would be served).
* HTTP/2 (:class:`GuardedH2Protocol`), on that stream only, the connection going
  on: a ``:method`` that is not an HTTP token or a ``:path`` that is not visible
  ASCII -- what h11 already refuses on HTTP/1.1, and what hypercorn decodes as
  ASCII without a check -- and ``CONNECT`` (WebSocket over HTTP/2, or a tunnel).

And one thing HTTP/1.1 owes: a client that sends a whole request and then
half-closes (``shutdown(SHUT_WR)``) still gets its answer; hypercorn took the
end of its input for a disconnect and cancelled the request, or not, by a race.
Why: docs/transport.md.
"""

from __future__ import annotations

import re
import weakref
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h11
import hyperframe.exceptions
import hyperframe.frame
import trio

from .frame_budget import MAX_HEADER_BLOCK, FrameBudget
from .hypercorn_internals import (
    Closed,
    H2CProtocolRequiredError,
    H2Protocol,
    H2ProtocolAssumedError,
    H11Protocol,
    ProtocolWrapper,
    RawData,
)

__all__ = ["GuardedH11Protocol", "GuardedH2Protocol", "GuardedProtocolWrapper"]

#: RFC 9110's token (a method) and RFC 9112's request target as h11 reads it: what
#: an HTTP/2 request must also be before hypercorn decodes it as ASCII.
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_TARGET = re.compile(rb"[\x21-\x7e]+")

NO_WEBSOCKET = "WebSocket is not served here: this API speaks plain HTTP requests only"
SMUGGLING = "Content-Length and Transfer-Encoding together are refused (RFC 9112 section 6.1)"
BAD_METHOD = "the request method is not an HTTP token"
BAD_TARGET = "the request target must be visible ASCII: percent-encode anything else"
NO_CONNECT = "CONNECT is not served here: this API speaks plain HTTP requests only"


def _plain(message: str) -> bytes:
    return message.encode() + b"\n"


def _h11_refusal(request: h11.Request) -> str | None:
    """Why an HTTP/1.1 request is refused before it reaches the app, or None."""
    names = set()
    for name, value in request.headers:  # h11 gives names lowercased
        names.add(name)
        if name == b"upgrade" and b"websocket" in value.lower():
            return NO_WEBSOCKET
    if b"content-length" in names and b"transfer-encoding" in names:
        return SMUGGLING
    return None


def _h2_refusal(headers: list[tuple[bytes, bytes]]) -> str | None:
    """Why an HTTP/2 request is refused before hypercorn handles it, or None."""
    method = path = None
    for name, value in headers:
        if name == b":method":
            method = value
        elif name == b":path":
            path = value
    if method is None or not _TOKEN.fullmatch(method):
        return BAD_METHOD
    if method.upper() == b"CONNECT":
        return NO_CONNECT
    if path is None or not _TARGET.fullmatch(path):
        return BAD_TARGET
    return None


#: How much of one read h2 parses at a time (see GuardedH2Protocol.handle).
_H2_SLICE = 4096


#: The most a request's header list may hold, as h2 counts it (names, values and 32
#: bytes a field): the app's 16 KiB of names and values in 128 fields.
H2_MAX_HEADER_LIST = 16 * 1024 + 32 * 128


#: How many HTTP/2 streams one worker may have open across all its connections, in
#: ``--h2-max-concurrent-streams`` (each connection's own bound): 10 full connections.
H2_STREAMS_PER_WORKER = 10


def _without_bad_h2c_upgrade(request: h11.Request) -> h11.Request:
    """The request without its ``Upgrade`` if it asks for h2c with ``HTTP2-Settings``
    that h2 refuses (a value out of range, a truncated setting): it is answered over
    HTTP/1.1, as an upgrade hypercorn declines is. hypercorn would answer 101 and then
    fail on the settings, a traceback per request."""
    settings = b""
    upgrade = False
    for name, value in request.headers:
        if name == b"http2-settings":  # h11 lower-cases header names
            settings = value
        elif name == b"upgrade" and value.strip().lower() == b"h2c":
            upgrade = True
    if not upgrade:
        return request
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    try:
        connection.initiate_upgrade_connection(settings)
    except (h2.exceptions.ProtocolError, hyperframe.exceptions.HyperframeError):
        headers = [(name, value) for name, value in request.headers if name != b"upgrade"]
        return h11.Request(
            method=request.method, target=request.target, headers=headers,
            http_version=request.http_version,
        )  # fmt: skip
    return request


class _OpenStreams:
    """The HTTP/2 streams one worker has open (started and not yet closed), and its bound."""

    _of: weakref.WeakKeyDictionary[Any, _OpenStreams] = weakref.WeakKeyDictionary()

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    @classmethod
    def of(cls, context: Any, config: Any) -> _OpenStreams:
        """The count for hypercorn's worker ``context``."""
        counter = cls._of.get(context)
        if counter is None:
            counter = cls._of[context] = cls(H2_STREAMS_PER_WORKER * config.h2_max_concurrent_streams)
        return counter


def _peer(client: tuple[str, int] | None) -> str:
    return "an unknown address" if client is None else f"{client[0]}:{client[1]}"


class _Refused(Exception):
    """An HTTP/1.1 request was refused, or the connection has closed: read no further."""


class GuardedH11Protocol(H11Protocol):  # type: ignore[misc,valid-type]
    """hypercorn's HTTP/1.1, refusing WebSocket upgrades and Content-Length with
    Transfer-Encoding, answering a whole request whose client half-closed, and
    starting no request once the connection is closed.

    hypercorn went on with the requests a client had pipelined after the connection
    closed under them (a write failed: the client reset): each was applied, its
    answer written nowhere. 100 clients that pipelined 500 ``/inc`` and reset kept
    the worker busy for 17 s with 28,500 increments nobody could see.
    """

    _refusal: str | None = None
    _refused = False
    _closed = False
    _answered: trio.Event | None = None

    async def handle(self, event: Any) -> None:
        if self._refused:
            return  # the connection is closing: nothing more is read
        if isinstance(event, Closed):
            self._closed = True
        try:
            await super().handle(event)
        except _Refused:
            return
        if (
            isinstance(event, RawData)
            and not event.data
            and self.stream is not None
            and self.connection.their_state is h11.CLOSED
        ):
            # The client sent a whole request, then half-closed: the request was
            # read and may be applied, so it is answered, if the socket still
            # takes it, before the connection closes. This is the read loop's
            # task: it waits here until the response ends, or the connection is
            # closed another way (a failed write, shutdown).
            self._answered = trio.Event()
            await self._answered.wait()

    async def _close_stream(self) -> None:
        await super()._close_stream()
        if self._answered is not None:
            self._answered.set()

    async def _check_protocol(self, event: h11.Request) -> None:
        if self._closed:
            raise _Refused  # pipelined behind the close: no one can read its answer
        self._refusal = _h11_refusal(event)
        if self._refusal is None:
            await super()._check_protocol(_without_bad_h2c_upgrade(event))  # h2c upgrade, HTTP/2 preface

    async def _create_stream(self, request: h11.Request) -> None:
        if self._refusal is None:
            await super()._create_stream(request)
            return
        body = _plain(self._refusal)
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
            (b"connection", b"close"),
            *self.config.response_headers("h11"),
        ]
        self._refused = True
        await self._send_h11_event(h11.Response(status_code=400, headers=headers))
        await self._send_h11_event(h11.Data(data=body))
        await self._send_h11_event(h11.EndOfMessage())
        await self.send(Closed())
        raise _Refused


class GuardedH2Protocol(H2Protocol):  # type: ignore[misc,valid-type]
    """hypercorn's HTTP/2, refusing a stream whose method or path it would fail on
    (or CONNECT), dropping data for a stream that has already been answered, and
    ending a connection that opens streams only to reset them ("rapid reset").

    hypercorn starts the app for every stream as its HEADERS are read, and the
    client's RST_STREAM only cancels it afterwards: 1,000 HEADERS + RST_STREAM
    pairs in one write started 1,000 requests in one scheduling round (every other
    client waited 2-3 s), and overflowed the priority tree of streams waiting to
    send, which ended the connection with a traceback. Here a stream the client
    resets in the same read is never started (it was cancelled before it was
    read: nothing is applied), PRIORITY frames for streams that are not open are
    dropped (hypercorn put each one in that tree, to wait for ever), and a client
    that has reset more than ``h2_max_concurrent_streams`` of its streams, and
    more than half of all it opened, gets GOAWAY with ENHANCE_YOUR_CALM.

    So does a client that sends more frames than its requests account for
    (SETTINGS, PING, PRIORITY, WINDOW_UPDATE floods), or a header block over 16 KiB
    (h2 decodes a block in one step: 1 MiB of Huffman-coded bytes took it 0.2-0.4 s):
    the :class:`~trio_counters.transport.frame_budget.FrameBudget`; h2 never parses
    the frame past it. A read is parsed in slices with a checkpoint between
    them, so no connection holds the worker for a whole 64 KiB read of frames.

    And the worker bounds the streams it has open across all its connections
    (:data:`H2_STREAMS_PER_WORKER` connections' worth): one h2 connection holds up
    to ``--h2-max-concurrent-streams`` requests in flight where an HTTP/1.1 one
    holds one, so 100 connections that opened 100 streams each and never read held
    10,000, and every other client waited 9-11 s. A stream past the bound is reset
    with REFUSED_STREAM, not started.
    """

    _opened = 0
    _reset = 0
    _last_started = 0
    _retiring = False

    @property
    def _open_streams(self) -> _OpenStreams:
        return _OpenStreams.of(self.context, self.config)

    async def initiate(
        self, headers: list[tuple[bytes, bytes]] | None = None, settings: bytes | None = None
    ) -> None:
        if headers is None or _h2_refusal(headers) is None:
            await super().initiate(headers, settings)
            return
        # An h2c upgrade whose own request (stream 1) is refused: as hypercorn's
        # initiate, with the refusal in place of the request.
        self.connection.initiate_upgrade_connection(settings)
        await self._refuse(1, _h2_refusal(headers))  # type: ignore[arg-type]
        self.task_group.spawn(self.send_task)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._frames = FrameBudget(trio.current_time())
        # h2 decodes a header block whole; each field costs it about 7 µs, and one
        # byte of the block can name a field from the HPACK table: 1,900 fields in
        # 1.9 KiB took 14 ms a request under hypercorn's 64 KiB header list. The app
        # refuses more than 16 KiB of names and values (431); this leaves room for
        # that and 32 bytes a field (h2's count) for 128 fields, and cuts the rest.
        self.connection.decoder.max_header_list_size = min(
            self.config.h2_max_header_list_size, H2_MAX_HEADER_LIST
        )

    async def handle(self, event: Any) -> None:
        if not isinstance(event, RawData):
            await super().handle(event)
            return
        data = event.data
        cut = self._frames.admit(data, trio.current_time())
        if cut is not None:
            data = data[:cut]
        if len(data) <= _H2_SLICE:
            await super().handle(RawData(data=data))
        else:
            # A large read goes to h2 in slices, with a checkpoint between them, so
            # that other connections are served meanwhile and one closed (rapid
            # reset, say) is not parsed to the end of a 64 KiB read first.
            view = memoryview(data)
            for start in range(0, len(view), _H2_SLICE):
                if self.closed:
                    return
                if start:
                    await trio.lowlevel.checkpoint()
                await super().handle(RawData(data=bytes(view[start : start + _H2_SLICE])))
        if cut is not None and not self.closed:
            if self._frames.exceeded == "header block":
                await self._calm_down(
                    b"header block too large", f"sent a header block over {MAX_HEADER_BLOCK} bytes"
                )
            else:
                await self._calm_down(
                    b"too many frames", f"sent {self._frames.frames} frames for {self._opened} requests"
                )

    async def _handle_events(self, events: list[Any]) -> None:
        # One event at a time, since whether a stream exists depends on the
        # events before it.
        reset_here = {event.stream_id for event in events if isinstance(event, h2.events.StreamReset)}
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self._opened += 1
                if event.stream_id in reset_here:
                    continue  # cancelled before it was read: never started
                refusal = _h2_refusal(event.headers)
                if refusal is not None and not self.context.terminated.is_set():
                    self._frames.forfeit_request()
                    await self._refuse(event.stream_id, refusal)
                    continue
                open_streams = self._open_streams
                if open_streams.count >= open_streams.limit:
                    # The worker holds all the streams it may: not started; the
                    # client may send it again (RFC 9113 section 8.7).
                    self._frames.forfeit_request()
                    self.connection.reset_stream(event.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
                    await self._flush()
                    continue
                if self.keep_alive_requests >= self.config.keep_alive_max_requests:
                    await self._retire(event.stream_id)
                    continue
                self._last_started = event.stream_id
            elif isinstance(event, h2.events.StreamReset) and event.remote_reset:
                self._reset += 1
                if self._reset > self.config.h2_max_concurrent_streams and 2 * self._reset > self._opened:
                    await self._calm_down(
                        b"too many streams reset",
                        f"reset {self._reset} of the {self._opened} streams it opened",
                    )
                    return
            elif isinstance(event, h2.events.PriorityUpdated) and (
                event.stream_id not in self.streams
                or (event.depends_on and event.depends_on not in self.streams)
            ):
                # hypercorn would add the stream, or the one it depends on, to its
                # send queue, never to leave (past 1,000 its priority tree raises).
                # Priority is advice (RFC 9113 section 5.3): the stream keeps its own.
                continue
            elif isinstance(event, h2.events.DataReceived) and event.stream_id not in self.streams:
                # Its stream was refused, or answered before its body ended
                # (hypercorn then fails on the missing stream): give the client
                # its flow-control credit back and drop the data.
                self.connection.acknowledge_received_data(
                    event.flow_controlled_length, event.stream_id
                )
                await self._flush()
                continue
            await super()._handle_events([event])

    async def _create_stream(self, request: Any) -> None:
        try:
            await super()._create_stream(request)
        finally:
            if request.stream_id in self.streams:  # as _close_stream will count it out
                self._open_streams.count += 1

    async def _close_stream(self, stream_id: int) -> None:
        if stream_id in self.streams:
            self._open_streams.count -= 1
        await super()._close_stream(stream_id)

    async def _retire(self, stream_id: int) -> None:
        """Refuse ``stream_id`` unstarted: the connection has served its
        ``--keep-alive-max-requests``. The first time, GOAWAY (NO_ERROR) naming the
        last stream started; the streams in flight still answer.

        hypercorn started the request past the limit and then had h2 send GOAWAY,
        which ends h2's side of the connection at once: no stream in flight could
        send its answer. 90 increments in flight at the 1,000th request: 10-23 of
        them applied and never acknowledged, the worst a client can get (a retry
        counts it twice). So the GOAWAY frame is written here, past h2, whose
        connection stays open for the answers owed; the client opens a new
        connection for what it sends next (REFUSED_STREAM: RFC 9113 section 8.7).
        """
        self._frames.forfeit_request()
        self.connection.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
        await self._flush()
        if not self._retiring:
            self._retiring = True
            goaway = hyperframe.frame.GoAwayFrame(0, error_code=h2.errors.ErrorCodes.NO_ERROR)
            goaway.last_stream_id = self._last_started
            await self.send(RawData(data=goaway.serialize()))

    async def _calm_down(self, debug: bytes, why: str) -> None:
        """GOAWAY (ENHANCE_YOUR_CALM) to a client that floods, and close: ``why`` goes to the log."""
        self.connection.close_connection(
            h2.errors.ErrorCodes.ENHANCE_YOUR_CALM,
            last_stream_id=self._last_started,
            additional_data=debug,
        )
        await self._flush()
        self.closed = True  # read no further
        await self.config.log.warning(
            "trio_counters: closed an HTTP/2 connection from %s that %s", _peer(self.client), why
        )
        await self.send(Closed())

    async def _refuse(self, stream_id: int, message: str) -> None:
        """400 with ``message`` on ``stream_id``, then a reset if the client is still sending."""
        body = _plain(message)
        try:
            self.connection.send_headers(
                stream_id,
                [
                    (b":status", b"400"),
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", b"%d" % len(body)),
                    *self.config.response_headers("h2"),
                ],
            )
            try:
                self.connection.send_data(stream_id, body, end_stream=True)
            except h2.exceptions.FlowControlError:  # no window for it: the reset says enough
                self.connection.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            else:
                if not self.connection.streams[stream_id].closed:
                    # RFC 9113 section 8.1: a complete response before the request
                    # is complete, then RST_STREAM with NO_ERROR.
                    self.connection.reset_stream(stream_id, h2.errors.ErrorCodes.NO_ERROR)
        except (h2.exceptions.ProtocolError, KeyError):
            pass  # the client has reset or closed the stream meanwhile
        await self._flush()


class GuardedProtocolWrapper(ProtocolWrapper):  # type: ignore[misc,valid-type]
    """hypercorn's ``ProtocolWrapper`` with :class:`GuardedH11Protocol` and
    :class:`GuardedH2Protocol` in place of its own protocols."""

    def __init__(
        self,
        app: Any,
        config: Any,
        context: Any,
        task_group: Any,
        state: Any,
        ssl: bool,
        client: Any,
        server: Any,
        send: Any,
        alpn_protocol: str | None = None,
    ) -> None:
        # As hypercorn's, without building its own protocol first.
        self.app = app
        self.config = config
        self.context = context
        self.task_group = task_group
        self.ssl = ssl
        self.client = client
        self.server = server
        self.send = send
        self.state = state
        protocol = GuardedH2Protocol if alpn_protocol == "h2" else GuardedH11Protocol
        self.protocol = self._new(protocol)

    def _new(self, protocol: type) -> Any:
        return protocol(
            self.app,
            self.config,
            self.context,
            self.task_group,
            self.state,
            self.ssl,
            self.client,
            self.server,
            self.send,
        )

    async def handle(self, event: Any) -> None:
        # As hypercorn's: HTTP/1.1 hands over to HTTP/2 on a preface or an h2c upgrade.
        try:
            return await self.protocol.handle(event)  # type: ignore[no-any-return]
        except H2ProtocolAssumedError as error:
            self.protocol = self._new(GuardedH2Protocol)
            await self.protocol.initiate()
            if error.data != b"":
                return await self.protocol.handle(RawData(data=error.data))  # type: ignore[no-any-return]
        except H2CProtocolRequiredError as error:
            self.protocol = self._new(GuardedH2Protocol)
            await self.protocol.initiate(error.headers, error.settings)
            if error.data != b"":
                return await self.protocol.handle(RawData(data=error.data))  # type: ignore[no-any-return]
        return None
