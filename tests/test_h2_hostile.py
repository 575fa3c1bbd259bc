"""Hostile HTTP/2 against the real server, on both transports: no request ends the worker.

hypercorn takes HTTP/2 with prior knowledge (h2c) on the plain port. One request whose
``:path`` or ``:method`` held a non-ASCII byte used to end the worker (hypercorn decodes
both as ASCII unchecked); now such a request gets 400 on its stream and the connection
goes on. The cases below are a fixed table, built from hostile bytes (non-ASCII, control
bytes, whitespace, empty) put in every pseudo-header and in common headers, plus the
frames and sequences a server must survive: missing, duplicate and misplaced
pseudo-headers, oversized header blocks and CONTINUATION abuse, RST_STREAM and GOAWAY at
odd moments, DATA where none may come, bad SETTINGS, WINDOW_UPDATE, PRIORITY and PING
frames, CONNECT. Every case runs on a connection of its own against one long-lived server
per transport, and after every case:

- the server still answers a normal request, and no counter has changed;
- no answer was a 5xx;
- a request refused for an undecodable method or target got 400, unless h2 itself
  refused the header block first (GOAWAY), and then the same connection answered again.

At the end the server has logged no traceback at all: nothing reached the connection
guard or hypercorn's "Error in ASGI Framework".
"""

from __future__ import annotations

import dataclasses
import json
import re
import signal
import struct
from collections.abc import Awaitable, Callable

import pytest
import trio
from hpack.hpack import encode_integer
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH

from trio_counters.testing import HOST, Server, exchange, get_bytes, request, value_of
from trio_counters.testing.checks import Witness
from trio_counters.transport.frame_budget import PER_SECOND
from trio_counters.testing.http2 import (
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    PING,
    PREFACE,
    PRIORITY,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    H2Client,
    frame,
    header_block,
)

#: A bound on one case (connect, send, read the outcome, check the server).
PATIENCE = 10.0

GET_I = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"127.0.0.1"), (b":path", b"/get?name=i")]
INC_I = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"127.0.0.1"), (b":path", b"/inc?name=i")]
#: An increment whose name comes in a form body: the app waits for the body's end, so
#: one left open never counts.
INC_FORM = [*INC_I[:3], (b":path", b"/inc"), (b"content-type", b"application/x-www-form-urlencoded")]

#: Bytes no header should carry, or that h11 would refuse in a request line.
HOSTILE = {
    "ff": b"\xff",
    "utf8": "é".encode(),
    "continuation-byte": b"\x80",
    "cjk": "日本".encode(),
    "nul": b"\x00",
    "soh": b"\x01",
    "esc": b"\x1b",
    "del": b"\x7f",
    "cr": b"\r",
    "lf": b"\n",
    "crlf": b"\r\n",
    "tab": b"\t",
    "space": b" ",
    "percent": b"%",
    "quote": b'"',
    "empty": b"",
}
#: RFC 9110's token (a method), and a request target as h11 reads it (visible ASCII).
TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
TARGET = re.compile(rb"[\x21-\x7e]+")


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    #: Sends the case on a fresh connection; the stream whose answer is checked, if any.
    send: Callable[[H2Client], Awaitable[int | None]]
    #: That stream must be refused with 400 (or h2 refuses the whole header block).
    refused: bool = False
    #: A stream reset is refusal enough (no flow-control window for the 400's body).
    reset_will_do: bool = False


def replaced(headers: list[tuple[bytes, bytes]], name: bytes, value: bytes) -> list[tuple[bytes, bytes]]:
    return [(key, value if key == name else old) for key, old in headers]


def raw(headers: list[tuple[bytes, bytes]], *, end_stream: bool = True) -> Callable[[H2Client], Awaitable[int]]:
    async def send(client: H2Client) -> int:
        return await client.raw_request(headers, end_stream=end_stream)

    return send


def frames(
    *data: bytes, stream: list[tuple[bytes, bytes]] | None = None, ended: bool = False
) -> Callable[[H2Client], Awaitable[None]]:
    """Raw frames, after a request on stream 1 if ``stream`` gives its headers (a
    request whose END_STREAM has been sent if ``ended``)."""

    async def send(client: H2Client) -> None:
        if stream is not None:
            await client.raw_request(stream, end_stream=ended)
        await client.send(b"".join(data))

    return send


def header_cases() -> list[Case]:
    cases = []
    for label, bad in HOSTILE.items():
        method = b"G" + bad + b"T"
        cases.append(Case(f":method=G{label}T", raw(replaced(INC_I, b":method", method)), not TOKEN.fullmatch(method)))
        for where, path in (("query", b"/inc?name=i" + bad), ("path", b"/inc" + bad + b"?name=i")):
            if not TARGET.fullmatch(path):  # a valid one would count, rightly
                cases.append(Case(f":path {where} {label}", raw(replaced(INC_I, b":path", path)), True))
        for name in (b":scheme", b":authority"):
            cases.append(Case(f"{name.decode()} {label}", raw(replaced(GET_I, name, b"x" + bad))))
        for name in (b"host", b"x-fuzz", b"content-type", b"content-length", b"cookie", b"accept", b"user-agent"):
            cases.append(Case(f"{name.decode()}: {label}", raw([*GET_I, (name, b"v" + bad + b"v")])))
        cases.append(Case(f"header name {label}", raw([*GET_I, (b"x" + bad + b"y", b"v")])))
    return cases


async def data_after_refusal(client: H2Client) -> int:
    # Refused while the client is still sending: its DATA must be dropped, not fail.
    stream_id = await client.raw_request(replaced(INC_FORM, b":path", b"/inc\xff"), end_stream=False)
    await client.send(frame(DATA, 0, stream_id, b"name=i") + frame(DATA, END_STREAM, stream_id, b"&x=1"))
    return stream_id


async def data_after_early_answer(client: H2Client) -> int:
    # 413 from the announced length, before the body: hypercorn then met DATA for a
    # stream it had dropped.
    headers = [*INC_FORM, (b"content-length", b"1000000")]
    stream_id = await client.raw_request(headers, end_stream=False)
    await client.response(stream_id)
    for _ in range(3):
        await client.send(frame(DATA, 0, stream_id, b"name=i&" * 100))
    await client.send(frame(DATA, END_STREAM, stream_id, b"x"))
    return stream_id


async def reset_before_body(client: H2Client) -> None:
    stream_id = await client.raw_request(INC_FORM, end_stream=False)
    await client.send(frame(DATA, 0, stream_id, b"name=i"))
    await client.send(frame(RST_STREAM, 0, stream_id, struct.pack(">I", 8)))


async def reset_after_request(client: H2Client) -> None:
    stream_id = await client.raw_request(GET_I)
    await client.send(frame(RST_STREAM, 0, stream_id, struct.pack(">I", 8)) * 2)


async def goaway_after_request(client: H2Client) -> int:
    stream_id = await client.raw_request(GET_I)
    await client.send(frame(GOAWAY, 0, 0, struct.pack(">II", stream_id, 0) + b"bye"))
    return stream_id


async def refusal_without_window(client: H2Client) -> int:
    # No flow-control window for the 400's body: the refusal resets the stream instead.
    await client.send(frame(SETTINGS, 0, 0, struct.pack(">HI", 0x4, 0)))
    return await client.raw_request(replaced(GET_I, b":path", b"/get\xff"))


async def too_many_streams(client: H2Client) -> None:
    for _ in range(110):
        await client.raw_request(INC_FORM, end_stream=False)


async def oversized_block(client: H2Client) -> int:
    # 80 KiB of headers, over hypercorn's 64 KiB header-list limit, in CONTINUATIONs.
    block = header_block([*GET_I, *((b"x-big-%d" % n, b"v" * 1000) for n in range(80))])
    stream_id = client.stream_id()
    chunks = [block[start : start + 16384] for start in range(0, len(block), 16384)]
    data = frame(HEADERS, END_STREAM, stream_id, chunks[0])
    for index, chunk in enumerate(chunks[1:], 1):
        data += frame(CONTINUATION, END_HEADERS if index == len(chunks) - 1 else 0, stream_id, chunk)
    await client.send(data)
    return stream_id


async def split_block(client: H2Client) -> int:
    # A valid request whose header block comes one byte per CONTINUATION: answered.
    block = header_block(GET_I)
    stream_id = client.stream_id()
    data = frame(HEADERS, END_STREAM, stream_id, block[:1])
    for index in range(1, len(block)):
        data += frame(CONTINUATION, END_HEADERS if index == len(block) - 1 else 0, stream_id, block[index : index + 1])
    await client.send(data)
    return stream_id


def structure_cases() -> list[Case]:
    pseudo = [name for name, _ in INC_I]
    cases = [
        *(Case(f"missing {name.decode()}", raw([h for h in INC_I if h[0] != name]), name == b":method")
          for name in pseudo),
        *(Case(f"duplicate {name.decode()}", raw([*INC_I, (name, dict(INC_I)[name])])) for name in pseudo),
        Case("duplicate :path, the second hostile", raw([*INC_I, (b":path", b"/inc\xff")])),
        Case("pseudo-header after a header", raw([*INC_I[:2], (b"x-a", b"b"), *INC_I[2:]])),
        Case("unknown pseudo-header", raw([*INC_I, (b":foo", b"bar")])),
        Case(":status in a request", raw([*INC_I, (b":status", b"200")])),
        Case("uppercase header name", raw([*INC_I, (b"X-Upper", b"v")])),
        Case("empty header name", raw([*INC_I, (b"", b"v")])),
        *(Case(f"connection-specific {name.decode()}", raw([*INC_I, (name, b"x")]))
          for name in (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")),
        Case("te: gzip", raw([*INC_I, (b"te", b"gzip")])),
        Case("CONNECT", raw([(b":method", b"CONNECT"), (b":authority", b"127.0.0.1:1")], end_stream=False), True),
        Case("extended CONNECT websocket", raw([
            (b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", b"http"),
            (b":authority", b"127.0.0.1"), (b":path", b"/inc?name=i")], end_stream=False), True),
        Case("content-length disagrees with DATA", frames(
            frame(DATA, END_STREAM, 1, b"nam"), stream=[*INC_FORM, (b"content-length", b"5")])),
        Case("DATA after a refusal", data_after_refusal, True),
        Case("DATA after an early 413", data_after_early_answer),
        Case("refusal with no flow-control window", refusal_without_window, True, reset_will_do=True),
        Case("oversized header block", oversized_block),
        Case("one byte per CONTINUATION", split_block),
        Case("CONTINUATION without HEADERS", frames(frame(CONTINUATION, END_HEADERS, 1, header_block(GET_I)))),
        Case("HEADERS then PING before CONTINUATION", frames(
            frame(HEADERS, END_STREAM, 1, header_block(GET_I)[:3]), frame(PING, 0, 0, b"\0" * 8))),
        Case("invalid HPACK index", frames(frame(HEADERS, END_STREAM | END_HEADERS, 1, b"\xff\xff\xff\x7f"))),
        Case("HPACK table size over the limit", frames(frame(HEADERS, END_STREAM | END_HEADERS, 1, b"\x3f\xe1\xff\x03"))),
        Case("HEADERS on an even stream", frames(frame(HEADERS, END_STREAM | END_HEADERS, 2, header_block(GET_I)))),
        Case("HEADERS on stream 0", frames(frame(HEADERS, END_STREAM | END_HEADERS, 0, header_block(GET_I)))),
        Case("stream ids going back", frames(
            frame(HEADERS, END_STREAM | END_HEADERS, 5, header_block(GET_I)),
            frame(HEADERS, END_STREAM | END_HEADERS, 3, header_block(INC_I)))),
        Case("RST_STREAM before the body", reset_before_body),
        Case("RST_STREAM twice after a request", reset_after_request),
        Case("RST_STREAM on an idle stream", frames(frame(RST_STREAM, 0, 99, struct.pack(">I", 0)))),
        Case("RST_STREAM on stream 0", frames(frame(RST_STREAM, 0, 0, struct.pack(">I", 0)))),
        Case("RST_STREAM of the wrong length", frames(frame(RST_STREAM, 0, 1, b"\0"), stream=INC_FORM)),
        Case("GOAWAY first", frames(frame(GOAWAY, 0, 0, struct.pack(">II", 0, 2)))),
        Case("GOAWAY after a request", goaway_after_request),
        Case("GOAWAY on a stream", frames(frame(GOAWAY, 0, 1, struct.pack(">II", 0, 0)))),
        Case("GOAWAY too short", frames(frame(GOAWAY, 0, 0, b"\0"))),
        Case("DATA on stream 0", frames(frame(DATA, 0, 0, b"x"))),
        Case("DATA on an idle stream", frames(frame(DATA, END_STREAM, 7, b"x"))),
        Case("DATA after END_STREAM", frames(frame(DATA, 0, 1, b"x"), stream=GET_I, ended=True)),
        Case("DATA larger than the frame size", frames(frame(DATA, 0, 1, b"x" * 20000), stream=INC_FORM)),
        Case("WINDOW_UPDATE of 0", frames(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0)))),
        Case("WINDOW_UPDATE overflowing", frames(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 2**31 - 1)) * 2)),
        Case("SETTINGS window too large", frames(frame(SETTINGS, 0, 0, struct.pack(">HI", 0x4, 2**31)))),
        Case("SETTINGS frame size too small", frames(frame(SETTINGS, 0, 0, struct.pack(">HI", 0x5, 100)))),
        Case("SETTINGS unknown id", frames(frame(SETTINGS, 0, 0, struct.pack(">HI", 0xFA, 1)))),
        Case("SETTINGS on a stream", frames(frame(SETTINGS, 0, 1, b""))),
        Case("SETTINGS ACK with a payload", frames(frame(SETTINGS, 1, 0, struct.pack(">HI", 0x4, 1)))),
        Case("SETTINGS of a bad length", frames(frame(SETTINGS, 0, 0, b"\0\0\0"))),
        Case("PRIORITY on itself", frames(frame(PRIORITY, 0, 1, struct.pack(">IB", 1, 16)))),
        Case("PRIORITY on idle streams", frames(*(frame(PRIORITY, 0, n, struct.pack(">IB", n + 2, 16)) for n in range(1, 200, 2)))),
        # hypercorn put each in its queue of streams to send, which refuses a 1,001st.
        Case("PRIORITY on 1,100 idle streams", frames(*(frame(PRIORITY, 0, n, struct.pack(">IB", 0, 16)) for n in range(1, 2200, 2)))),
        Case("PING of a bad length", frames(frame(PING, 0, 0, b"\0"))),
        Case("PING on a stream", frames(frame(PING, 0, 1, b"\0" * 8))),
        Case("PUSH_PROMISE from the client", frames(frame(PUSH_PROMISE, END_HEADERS, 1, b"\0\0\0\2" + header_block(GET_I)), stream=INC_FORM)),
        Case("unknown frame type", frames(frame(0xFA, 0xFF, 1, b"hello"))),
        Case("too many streams", too_many_streams),
        Case("garbage after the preface", frames(b"\0" * 9 + b"garbage" * 10)),
    ]  # fmt: skip
    return cases


CASES = header_cases() + structure_cases()


async def state(port: int) -> tuple[int | None, int | None, int]:
    """The counters the cases might touch, and how many counters there are."""
    stats = json.loads((await request(port, "/stats")).body)
    return await value_of(port, "i"), await value_of(port, "j"), stats["counters"]


async def run_case(server: Server, case: Case) -> str:
    """One case on a fresh connection; what the server did, for the failure message."""
    async with await H2Client.connect(server.port) as client:
        stream_id = await case.send(client)
        if stream_id is None:
            await client.settle()
            return f"goaway={client.goaway} closed={client.closed}"
        stream = await client.response(stream_id)
        outcome = f"status={stream.status} reset={stream.reset} goaway={client.goaway} closed={client.closed}"
        assert stream.status is None or stream.status < 500, outcome
        if case.refused:
            refused = stream.status == 400 or (case.reset_will_do and stream.reset is not None)
            assert refused or client.goaway is not None, outcome
            if client.goaway is None and not client.closed and not case.reset_will_do:
                # Refused on its stream only: the connection answers the next request.
                again = await client.response(await client.request(GET_I))
                assert again.status == 200, f"{outcome}; then {again}"
        return outcome


@pytest.mark.parametrize("kind", ["fast", "stock"])
async def test_hostile_http2_never_ends_the_worker_nor_changes_a_counter(
    start_server: Callable[..., Awaitable[Server]], kind: str
) -> None:
    server = await start_server("lock", env={"TRIO_COUNTERS_TRANSPORT": kind})
    before = await state(server.port)
    for case in CASES:
        try:
            with trio.fail_after(PATIENCE):
                outcome = await run_case(server, case)
                assert await state(server.port) == before, f"a counter changed; {outcome}"
        except (AssertionError, OSError, trio.TooSlowError) as error:
            raise AssertionError(f"case {case.name!r}: {error!r}\n{server.log[-3000:]}") from error
    assert server.process.returncode is None
    assert server.tracebacks() == []


@pytest.mark.parametrize("kind", ["fast", "stock"])
async def test_a_client_that_never_opens_its_window_cannot_hold_the_shutdown(
    start_server: Callable[..., Awaitable[Server]], kind: str
) -> None:
    """Its answer can never be sent: the app's send waits for flow control (shielded on
    the stock transport) until the graceful deadline, and no longer."""
    graceful = 1.0
    server = await start_server(
        "lock", "--graceful-timeout", f"{graceful:g}", env={"TRIO_COUNTERS_TRANSPORT": kind}
    )
    with trio.fail_after(graceful + 3 * PATIENCE):
        async with await H2Client.connect(server.port) as client:
            await client.send(frame(SETTINGS, 0, 0, struct.pack(">HI", 0x4, 0)))  # window 0
            stream_id = await client.raw_request(replaced(GET_I, b":path", b"/metrics"))
            assert await client.settle()
            signalled = trio.current_time()
            server.send_signal(signal.SIGTERM)
            code = await server.wait(graceful + PATIENCE)
            took = trio.current_time() - signalled
            assert not client.streams[stream_id].ended
    assert code == 0, server.log
    assert took <= graceful + 1.0, f"the worker took {took:.2f} s to exit"


ENHANCE_YOUR_CALM = 0xB


@pytest.mark.parametrize("kind", ["fast", "stock"])
async def test_rapid_reset_starts_no_request_and_ends_the_connection(
    start_server: Callable[..., Awaitable[Server]], kind: str
) -> None:
    """1,000 increments, each reset in the same write that opens it ("rapid reset"):
    none is started, the client gets GOAWAY (ENHANCE_YOUR_CALM) once it has reset more
    than the 100 streams it may have open, and a well-behaved client is not held up.
    hypercorn started all 1,000 in one scheduling round (others waited 2-3 s) and its
    send queue refused the 1,001st with a traceback."""
    server = await start_server("lock", env={"TRIO_COUNTERS_TRANSPORT": kind})
    await request(server.port, "/set?name=i&val=0")
    witness = Witness(server.port)
    async with trio.open_nursery() as nursery:
        await nursery.start(witness.run)
        with trio.fail_after(PATIENCE):
            async with await H2Client.connect(server.port) as client:
                for _ in range(1000):
                    stream_id = client.stream_id()
                    client.h2.send_headers(stream_id, INC_I, end_stream=True)
                    client.h2.reset_stream(stream_id)
                await client.flush()
                await client.read_to_close()
        await trio.sleep(0.2)
        nursery.cancel_scope.cancel()
    assert client.goaway == ENHANCE_YOUR_CALM
    assert not any(stream.status for stream in client.streams.values())
    assert await value_of(server.port, "i") == 0
    print(witness.check(minimum=1, below=1.0))
    assert server.tracebacks() == []
    assert "reset 101 of the 101 streams it opened" in server.log


@pytest.mark.parametrize("kind", ["fast", "stock"])
async def test_a_client_resetting_most_of_its_started_streams_is_told_to_calm_down(
    start_server: Callable[..., Awaitable[Server]], kind: str
) -> None:
    """Streams reset after the server has read them (their requests wait for a body
    that never comes): up to 100 resets the connection still answers; at the 101st,
    with most of what it opened reset, it gets GOAWAY (ENHANCE_YOUR_CALM). Nothing was
    applied."""
    server = await start_server("lock", env={"TRIO_COUNTERS_TRANSPORT": kind})
    await request(server.port, "/set?name=i&val=0")

    async def open_and_reset(client: H2Client) -> None:
        stream_id = await client.raw_request(INC_FORM, end_stream=False)
        assert await client.settle()  # the server has read the HEADERS: the request waits
        await client.send(frame(RST_STREAM, 0, stream_id, struct.pack(">I", 8)))

    with trio.fail_after(3 * PATIENCE):
        async with await H2Client.connect(server.port) as client:
            for _ in range(100):
                await open_and_reset(client)
            answer = await client.response(await client.request(GET_I))
            assert answer.status == 200 and client.goaway is None
            await open_and_reset(client)
            await client.read_to_close()
    assert client.goaway == ENHANCE_YOUR_CALM
    assert await value_of(server.port, "i") == 0
    assert server.tracebacks() == []


REFUSED_STREAM = 0x7


@pytest.mark.parametrize("kind", ["fast", "stock"])
async def test_the_worker_bounds_the_http2_streams_it_holds_across_connections(
    start_server: Callable[..., Awaitable[Server]], kind: str
) -> None:
    """15 connections open 100 streams each and hold them (increments whose body never
    comes): the worker starts 1,000 (10 connections' worth of its 100-stream bound) and
    refuses the rest with REFUSED_STREAM, unstarted; HTTP/1.1 is served meanwhile; once
    the holders leave, HTTP/2 is served again. Nothing was applied."""
    server = await start_server("lock", env={"TRIO_COUNTERS_TRANSPORT": kind})
    with trio.fail_after(3 * PATIENCE):
        holders = [await H2Client.connect(server.port) for _ in range(15)]
        try:
            for client in holders:
                for _ in range(100):
                    await client.raw_request(INC_FORM, end_stream=False)
                # The first PING's answer can overtake the refusals of the streams
                # read with it; the second's comes after they are all sent.
                assert await client.settle() and await client.settle()
            resets = [stream.reset for client in holders for stream in client.streams.values()]
            assert resets.count(REFUSED_STREAM) == 500, resets
            assert len(resets) == 500  # the server sent nothing on the 1,000 it holds
            async with await H2Client.connect(server.port) as late:
                assert (await late.response(await late.request(GET_I))).reset == REFUSED_STREAM
            assert (await request(server.port, "/get?name=i")).status == 200  # HTTP/1.1
        finally:
            for client in holders:
                await client.aclose()
        async with await H2Client.connect(server.port) as again:
            for _ in range(100):  # the holders' streams close as their connections do
                answer = await again.response(await again.request(GET_I))
                if answer.status == 200:
                    break
                await trio.sleep(0.05)
            assert answer.status == 200, answer
    assert await value_of(server.port, "i") == 0
    assert server.tracebacks() == []


@pytest.mark.parametrize("kind", ["fast", "stock"])
async def test_priority_frames_naming_unknown_dependencies_cannot_lock_out_http2(
    start_server: Callable[..., Awaitable[Server]], kind: str
) -> None:
    """Ten connections each hold 100 streams (increments whose body never comes) and
    send 1,100 PRIORITY frames for an open stream, each depending on a new stream id --
    900, then 200 more once the frame budget has refilled. hypercorn put every such id
    in its priority tree, which raised at 1,001: the connection failed, and its 100
    streams stayed counted against the worker's bound, so after ten of them every HTTP/2
    stream from anyone was refused until a restart. Now the frames are dropped, the
    holders are served as before, and once they leave HTTP/2 is served again."""
    server = await start_server("lock", env={"TRIO_COUNTERS_TRANSPORT": kind})

    async def hold(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with await H2Client.connect(server.port) as holder:
            first = None
            for _ in range(100):
                stream_id = await holder.raw_request(INC_FORM, end_stream=False)
                first = first or stream_id
            assert await holder.settle()
            task_status.started()

            async def priority_frames(ids: range) -> None:
                await holder.send(
                    b"".join(frame(PRIORITY, 0, first, struct.pack(">IB", 100_001 + 2 * k, 15)) for k in ids)
                )
                assert await holder.settle()

            await priority_frames(range(900))
            await trio.sleep(250 / PER_SECOND)  # the frame budget earns 250 frames back
            await priority_frames(range(900, 1100))
            assert holder.goaway is None and not holder.closed

    with trio.fail_after(3 * PATIENCE):
        async with trio.open_nursery() as nursery:
            for _ in range(10):
                await nursery.start(hold)
        async with await H2Client.connect(server.port) as late:
            for _ in range(100):  # the holders' streams close as their connections do
                answer = await late.response(await late.request(GET_I))
                if answer.status == 200:
                    break
                await trio.sleep(0.05)
            assert answer.status == 200, answer
    assert await value_of(server.port, "i") == 0
    assert server.tracebacks() == []


@pytest.mark.parametrize("kind", ["fast", "stock"])
@pytest.mark.parametrize("settings", ["AAIAAAAC", "AAUAAABk", "AAIA", "AAIAAAABAAIAAAAC"])
async def test_an_h2c_upgrade_with_settings_h2_refuses_is_answered_over_http1(
    start_server: Callable[..., Awaitable[Server]], kind: str, settings: str
) -> None:
    """ENABLE_PUSH=2, MAX_FRAME_SIZE=100, a truncated setting: hypercorn answered 101 and
    then failed on the settings, a 3.9 KiB traceback per request (a log flood for the
    asking). Now the upgrade is declined and the request answered over HTTP/1.1."""
    server = await start_server("lock", env={"TRIO_COUNTERS_TRANSPORT": kind})
    data = get_bytes(
        "/get?name=i", "Upgrade: h2c", "Connection: Upgrade, HTTP2-Settings", f"HTTP2-Settings: {settings}"
    )
    outcome = await exchange(server.port, data, deadline=PATIENCE)
    assert outcome.status == 200 and outcome.head.startswith(b"HTTP/1.1 200"), outcome
    assert server.tracebacks() == []


#: One frame of each kind that makes h2 work without making a request.
FLOODS = {
    "SETTINGS": frame(SETTINGS, 0, 0, struct.pack(">HI", 0x3, 100)),
    "PING": frame(PING, 0, 0, b"\0" * 8),
    "PRIORITY": frame(PRIORITY, 0, 3, struct.pack(">IB", 0, 15)),
    "WINDOW_UPDATE": frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1)),
    "unknown type": frame(0xFA, 0, 0, b"hello"),
    # h2 spends about 15 µs on each setting: 40-55 ms on this one frame.
    "SETTINGS of 2,730 unknown settings": frame(
        SETTINGS, 0, 0, b"".join(struct.pack(">HI", 0x100 + k, 1) for k in range(2730))
    ),
}


async def flood(port: int, one: bytes, clients: list[H2Client], frames: int = 100_000) -> None:
    """``frames`` copies of frame ``one`` on a new connection, reading whatever comes
    back (the ACKs), until they are sent or the server closes; the client goes in
    ``clients``."""
    async with await H2Client.connect(port) as client:
        clients.append(client)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.read_to_close)
            chunk = one * 1000
            for _ in range(frames // 1000):
                await client.send(chunk)
                if client.closed:
                    break
            await client.read_to_close()


@pytest.mark.parametrize("kind", ["fast", "stock"])
@pytest.mark.parametrize("flooded", list(FLOODS))
async def test_a_frame_flood_gets_goaway_and_holds_no_one_up(
    start_server: Callable[..., Awaitable[Server]], kind: str, flooded: str
) -> None:
    """Four connections each send 100,000 frames that make no request, and read the
    answers. h2 spends 15-35 µs on each, and parsed a whole 64 KiB read (4,000 frames)
    in one scheduling step: a well-behaved client waited 5 s, and a SIGTERM took twice
    the graceful timeout. Now each connection gets GOAWAY (ENHANCE_YOUR_CALM) once it
    has sent its budget's 1,000, and is closed; the witness is answered throughout."""
    server = await start_server("lock", env={"TRIO_COUNTERS_TRANSPORT": kind})
    witness = Witness(server.port)
    clients: list[H2Client] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(witness.run)
        with trio.fail_after(PATIENCE):
            async with trio.open_nursery() as floods:
                for _ in range(4):
                    floods.start_soon(flood, server.port, FLOODS[flooded], clients)
        await trio.sleep(0.2)
        nursery.cancel_scope.cancel()
    # The GOAWAY is sent before the close, but the client may never read it: closing
    # a socket with the flood still unread sends a TCP reset, which drops it.
    assert all(client.closed and client.goaway in (ENHANCE_YOUR_CALM, None) for client in clients)
    print(witness.check(minimum=1, below=1.0))
    assert server.log.count("frames for 0 requests") == 4, server.log[-3000:]
    assert server.tracebacks() == []


@pytest.mark.parametrize("kind", ["fast", "stock"])
async def test_sigterm_during_frame_floods_ends_the_worker_within_the_graceful_timeout(
    start_server: Callable[..., Awaitable[Server]], kind: str
) -> None:
    """Four clients flood PING and WINDOW_UPDATE frames, reconnecting as they are cut
    off, while the worker is told to stop: it exits 0 within ``--graceful-timeout``
    plus a second (it took 5.5-6.5 s against 3 on the fast transport, 5 s on stock)."""
    graceful = 1.0
    server = await start_server(
        "lock", "--graceful-timeout", f"{graceful:g}", env={"TRIO_COUNTERS_TRANSPORT": kind}
    )
    clients: list[H2Client] = []

    async def keep_flooding(one: bytes) -> None:
        while True:
            try:
                await flood(server.port, one, clients)
            except OSError:
                return  # the server no longer listens

    async with trio.open_nursery() as nursery:
        for one in (FLOODS["PING"], FLOODS["WINDOW_UPDATE"]) * 2:
            nursery.start_soon(keep_flooding, one)
        await trio.sleep(0.5)
        signalled = trio.current_time()
        server.send_signal(signal.SIGTERM)
        code = await server.wait(graceful + PATIENCE)
        took = trio.current_time() - signalled
        nursery.cancel_scope.cancel()
    assert code == 0, server.log[-3000:]
    assert took <= graceful + 1.0, f"the worker took {took:.2f} s to exit"
    assert len(clients) > 4  # each was cut off at least once
    assert server.tracebacks() == []


@pytest.mark.parametrize("kind", ["fast", "stock"])
async def test_a_chatty_client_within_its_frame_budget_is_never_cut_off(
    start_server: Callable[..., Awaitable[Server]], kind: str
) -> None:
    """900 requests on one connection (hypercorn closes one after 1,000), each with a
    PING, a WINDOW_UPDATE and a PRIORITY frame beside it: 2,700 frames that make no
    request, far past the budget's 1,000 at once, but within the 10 each request
    earns. All are answered."""
    server = await start_server("lock", env={"TRIO_COUNTERS_TRANSPORT": kind})
    await request(server.port, "/set?name=i&val=0")
    with trio.fail_after(3 * PATIENCE):
        async with await H2Client.connect(server.port) as client:
            for _ in range(18):
                streams = []
                for _ in range(50):
                    stream_id = await client.request(INC_I)
                    await client.send(
                        frame(PING, 0, 0, b"\0" * 8)
                        + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 100))
                        + frame(PRIORITY, 0, stream_id, struct.pack(">IB", 0, 15))
                    )
                    streams.append(stream_id)
                for stream_id in streams:
                    answer = await client.response(stream_id)
                    assert answer.status == 200, (answer, client.goaway, client.closed)
            assert client.goaway is None and not client.closed
    assert await value_of(server.port, "i") == 900
    assert server.tracebacks() == []


def huffman_bomb(stream_id: int = 1) -> bytes:
    """One header block of 1 MiB in 64 frames: one literal header whose value is
    Huffman-coded ``a``s (5 bytes code 8 of them), which h2 decodes whole, in one step,
    once the last frame is in -- 0.2-0.4 s each -- before it finds the block too long."""
    size = 64 * 16384
    code = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH).encode(b"a" * 8)
    length = encode_integer(size - 9, 7)
    length[0] |= 0x80  # Huffman-coded
    block = (b"\x00\x01x" + bytes(length) + code * (size // len(code)))[:size]
    chunks = [block[start : start + 16384] for start in range(0, size, 16384)]
    data = frame(HEADERS, END_STREAM, stream_id, chunks[0])
    for index, chunk in enumerate(chunks[1:], 1):
        data += frame(CONTINUATION, END_HEADERS if index == len(chunks) - 1 else 0, stream_id, chunk)
    return data


@pytest.mark.parametrize("kind", ["fast", "stock"])
async def test_huge_header_blocks_are_refused_before_h2_decodes_them(
    start_server: Callable[..., Awaitable[Server]], kind: str
) -> None:
    """32 clients send 1 MiB header blocks of Huffman-coded bytes, reconnecting each
    time they are cut off, while a witness asks; then the worker is told to stop. h2
    decoded each block in one 0.2-0.4 s step: the witness got a tenth of its answers
    (a request stalled when the watch ends is not counted: hence the minimum), and 32
    such clients held a SIGTERM for 5-12 s. Now a block over 16 KiB ends its
    connection (GOAWAY, ENHANCE_YOUR_CALM) before h2 reads past the first 16 KiB."""
    graceful = 1.0
    server = await start_server(
        "lock", "--graceful-timeout", f"{graceful:g}", env={"TRIO_COUNTERS_TRANSPORT": kind}
    )
    bomb = PREFACE + frame(SETTINGS, 0, 0) + huffman_bomb()
    sent = 0

    async def keep_bombing() -> None:
        nonlocal sent
        while True:
            try:
                async with await trio.open_tcp_stream(HOST, server.port) as stream:
                    sent += 1
                    await stream.send_all(bomb)
                    while await stream.receive_some(65536):
                        pass
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                if server.process.returncode is not None:
                    return

    witness = Witness(server.port)
    async with trio.open_nursery() as nursery:
        for _ in range(32):
            nursery.start_soon(keep_bombing)
        async with trio.open_nursery() as watching:
            await watching.start(witness.run)
            await trio.sleep(2.0)
            watching.cancel_scope.cancel()
        signalled = trio.current_time()
        server.send_signal(signal.SIGTERM)
        code = await server.wait(graceful + PATIENCE)
        took = trio.current_time() - signalled
        nursery.cancel_scope.cancel()
    assert code == 0, server.log[-3000:]
    print(witness.check(minimum=50, below=1.0), f"connections: {sent}")
    assert took <= graceful + 1.0, f"the worker took {took:.2f} s to exit"
    assert "sent a header block over 16384 bytes" in server.log
    assert server.tracebacks() == []


@pytest.mark.parametrize("kind", ["fast", "stock"])
async def test_headers_on_a_closed_stream_earn_no_frames(
    start_server: Callable[..., Awaitable[Server]], kind: str
) -> None:
    """A refused stream, then HEADERS on it again and again, each with eight PINGs: h2
    decodes each block and answers STREAM_CLOSED, but no request is opened, so they earn
    nothing and the PINGs run the budget out."""
    server = await start_server("lock", env={"TRIO_COUNTERS_TRANSPORT": kind})
    with trio.fail_after(PATIENCE):
        async with await H2Client.connect(server.port) as client:
            stream_id = await client.raw_request(replaced(INC_FORM, b":method", b"G\xffT"), end_stream=False)
            assert (await client.response(stream_id)).status == 400
            again = frame(HEADERS, END_STREAM | END_HEADERS, stream_id, header_block(GET_I)) + FLOODS["PING"] * 8
            for _ in range(300):
                await client.send(again * 10)
                if client.closed:
                    break
            await client.read_to_close()
    assert "frames for 1 requests" in server.log
    assert server.tracebacks() == []


@pytest.mark.parametrize("kind", ["fast", "stock"])
async def test_a_body_sent_in_small_data_frames_is_within_the_budget(
    start_server: Callable[..., Awaitable[Server]], kind: str
) -> None:
    """100 increments whose 4,000-byte form bodies come in 100-byte DATA frames (40 per
    request, four times what a request earns): a body's frames are free, and all are
    counted."""
    server = await start_server("lock", env={"TRIO_COUNTERS_TRANSPORT": kind})
    await request(server.port, "/set?name=i&val=0")
    body = b"name=i&pad=" + b"x" * 3989
    pieces = [body[start : start + 100] for start in range(0, len(body), 100)]
    with trio.fail_after(3 * PATIENCE):
        async with await H2Client.connect(server.port) as client:
            for _ in range(100):
                stream_id = await client.raw_request(INC_FORM, end_stream=False)
                await client.send(
                    b"".join(
                        frame(DATA, END_STREAM if index == len(pieces) - 1 else 0, stream_id, piece)
                        for index, piece in enumerate(pieces)
                    )
                )
                answer = await client.response(stream_id)
                assert answer.status == 200, (answer, client.goaway, client.closed)
    assert await value_of(server.port, "i") == 100
    assert server.tracebacks() == []


@pytest.mark.parametrize("kind", ["fast", "stock"])
async def test_a_header_list_of_thousands_of_table_references_ends_its_connection(
    start_server: Callable[..., Awaitable[Server]], kind: str
) -> None:
    """One byte of an HPACK block can name a field stored in the dynamic table: 1,900
    such bytes are 1,900 fields, 14 ms of h2's time for one request under hypercorn's
    64 KiB header list. Past 16 KiB of names and values in 128 fields' room the decoder
    stops, and the connection ends, applying nothing; 16 KiB in one field still gets
    the app's 431."""
    server = await start_server("lock", env={"TRIO_COUNTERS_TRANSPORT": kind})
    with trio.fail_after(PATIENCE):
        async with await H2Client.connect(server.port) as client:
            stored = b"\x40\x01x\x01y"  # x: y, added to the dynamic table (index 62)
            block = header_block(INC_I) + stored + b"\xbe" * 1900
            await client.send(frame(HEADERS, END_STREAM | END_HEADERS, client.stream_id(), block))
            await client.read_to_close()
        assert client.goaway is not None
        async with await H2Client.connect(server.port) as client:
            big = await client.response(await client.request([*GET_I, (b"x-big", b"v" * (16 * 1024))]))
            assert big.status == 431, big
    assert await value_of(server.port, "i") == 0
    assert server.tracebacks() == []


@pytest.mark.parametrize("kind", ["fast", "stock"])
async def test_refused_requests_earn_no_frames(start_server: Callable[..., Awaitable[Server]], kind: str) -> None:
    """New streams refused with 400 (a method that is not a token), each with eight
    PINGs: each would earn ten frames, but a refused request forfeits them, so the
    PINGs run the budget out (16 such clients held others up 2 s)."""
    server = await start_server("lock", env={"TRIO_COUNTERS_TRANSPORT": kind})
    bad = replaced(GET_I, b":method", b"G\xffT")
    with trio.fail_after(PATIENCE):
        async with await H2Client.connect(server.port) as client:
            for _ in range(300):
                batch = b""
                for _ in range(10):
                    batch += frame(HEADERS, END_STREAM | END_HEADERS, client.stream_id(), header_block(bad))
                    batch += FLOODS["PING"] * 8
                await client.send(batch)
                if client.closed:
                    break
            await client.read_to_close()
    assert re.search(r"sent \d+ frames for \d+ requests", server.log), server.log[-2000:]
    assert server.tracebacks() == []


@pytest.mark.parametrize("kind", ["fast", "stock"])
async def test_a_connection_past_its_request_limit_answers_every_request_it_started(
    start_server: Callable[..., Awaitable[Server]], kind: str
) -> None:
    """Increments 90 at a time on one connection, past hypercorn's 1,000 requests a
    connection (``--keep-alive-max-requests``). hypercorn started the 1,001st and then
    had h2 send GOAWAY, which ends h2's side at once: the increments in flight were
    applied and never answered (10-23 of them). Now each request is answered 200 or
    refused unstarted (REFUSED_STREAM, after a GOAWAY with NO_ERROR), and the counter is
    exactly the number of 200s."""
    server = await start_server("lock", env={"TRIO_COUNTERS_TRANSPORT": kind})
    await request(server.port, "/set?name=i&val=0")
    with trio.fail_after(3 * PATIENCE):
        async with await H2Client.connect(server.port) as client:
            while client.goaway is None:
                streams = [await client.request(INC_I) for _ in range(90)]
                for stream_id in streams:
                    await client.response(stream_id)
            assert client.goaway == 0 and client.last_stream_id == streams[0] + 2 * (1000 % 90 - 1)
            started = {k: v for k, v in client.streams.items() if k <= client.last_stream_id}
            refused = {k: v for k, v in client.streams.items() if k > client.last_stream_id}
            # Resets and answers need not come in the order the requests went out.
            assert await client.read_until(lambda: all(stream.done for stream in client.streams.values()))
    assert [stream.status for stream in started.values()] == [200] * 1000
    assert [stream.reset for stream in refused.values()] == [REFUSED_STREAM] * 80
    assert await value_of(server.port, "i") == 1000
    assert server.tracebacks() == []
