"""Clients that disconnect at every stage of a request, under load, end to end: the
real hypercorn process never adds or loses an acknowledged increment.

While keep-alive clients increment a counter, others connect and leave -- closing
or resetting -- before, during and after their request, mid-body, mid-reply, after a
half-close, and between two pipelined requests. The final count lies between what
was acknowledged and what was acknowledged plus what might have been applied: never
more, never less; and the server still serves.

The test prints what it measured (``pytest -s`` shows it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable

import h11
import pytest
import trio

from trio_counters.config import SAFE_STRATEGIES
from trio_counters.testing import (
    Connection,
    Raw,
    RawResponse,
    Server,
    form_post_bytes,
    get_bytes,
    request,
    value_of,
)
from trio_counters.testing.checks import assert_no_tracebacks

StartServer = Callable[..., Awaitable[Server]]

#: ``--keep-alive`` in seconds, as for the other tests of misbehaving clients.
KEEP_ALIVE = 2
#: Only guards against a hang: a pass never comes near it.
HANG = 45

COUNTER = "d"
_INC = get_bytes(f"/inc?name={COUNTER}")


def _acknowledged(reply_start: bytes) -> bool:
    """An answer that began ``HTTP/1.1 200`` acknowledged the increment."""
    if reply_start.startswith(b"HTTP/1.1 200"):
        return True
    # Anything but silence would be a refusal this test does not expect.
    assert not reply_start, f"unexpected answer {reply_start!r}"
    return False


async def _status_line(raw: Raw) -> bytes:
    """What came until the end of the status line, or until the server closed."""
    try:
        await raw.until(b"\r\n")
    except EOFError:
        pass
    return bytes(raw.buffer)


#: Each stage opens a connection, misbehaves, and returns (acknowledged, might have counted).
Stage = Callable[[int], Awaitable[tuple[int, int]]]


async def _connect_then_close(port: int) -> tuple[int, int]:
    raw = await Raw.connect(port)
    await raw.aclose()
    return 0, 0


async def _connect_then_reset(port: int) -> tuple[int, int]:
    raw = await Raw.connect(port)
    raw.abort()
    await raw.aclose()
    return 0, 0


async def _mid_request_line(port: int) -> tuple[int, int]:
    async with await Raw.connect(port) as raw:
        await raw.send(_INC[:9])
    return 0, 0


async def _mid_headers_reset(port: int) -> tuple[int, int]:
    async with await Raw.connect(port) as raw:
        await raw.send(_INC[:-3])
        raw.abort()
    return 0, 0


async def _mid_body(port: int) -> tuple[int, int]:
    # "name=d" has arrived, the rest of the declared body never will: must not count.
    body = f"name={COUNTER}&pad=never-sent".encode()
    async with await Raw.connect(port) as raw:
        await raw.send(form_post_bytes("/inc", body[:7], length=len(body)))
    return 0, 0


async def _after_request_close(port: int) -> tuple[int, int]:
    async with await Raw.connect(port) as raw:
        await raw.send(_INC)
    return 0, 1


async def _after_request_reset(port: int) -> tuple[int, int]:
    async with await Raw.connect(port) as raw:
        await raw.send(_INC)
        raw.abort()
    return 0, 1


async def _after_form_reset(port: int) -> tuple[int, int]:
    async with await Raw.connect(port) as raw:
        await raw.send(form_post_bytes("/inc", f"name={COUNTER}".encode()))
        raw.abort()
    return 0, 1


async def _half_close_then_read(port: int) -> tuple[int, int]:
    # Sends its request and shuts its sending side; hypercorn takes the EOF as a
    # disconnect, so the answer may or may not come.
    async with await Raw.connect(port) as raw:
        await raw.send(_INC)
        await raw.stream.send_eof()
        reply = await _status_line(raw)
    return (1, 0) if _acknowledged(reply) else (0, 1)


async def _mid_reply(port: int) -> tuple[int, int]:
    # Reads the status line of the answer, then resets with the rest unread.
    async with await Raw.connect(port) as raw:
        await raw.send(_INC)
        reply = await _status_line(raw)
        raw.abort()
    return (1, 0) if _acknowledged(reply) else (0, 1)


async def _pipelined_then_reset(port: int) -> tuple[int, int]:
    # Two requests at once; reads the first answer whole, resets before the second.
    first: RawResponse | None = None
    async with await Raw.connect(port) as raw:
        await raw.send(_INC + _INC)
        try:
            first = await raw.response()
        except EOFError:
            # Closed before a whole answer: nothing, or part of one, came.
            assert not raw.buffer, f"unexpected partial answer {bytes(raw.buffer)!r}"
        raw.abort()
    if first is None:
        return 0, 2
    assert first.status == 200, f"unexpected answer {first}"
    return 1, 1


STAGES: dict[str, Stage] = {
    "connect, close": _connect_then_close,
    "connect, reset": _connect_then_reset,
    "mid request line, close": _mid_request_line,
    "mid headers, reset": _mid_headers_reset,
    "mid body, close": _mid_body,
    "after the request, close": _after_request_close,
    "after the request, reset": _after_request_reset,
    "after a form request, reset": _after_form_reset,
    "half-close, then read": _half_close_then_read,
    "mid reply, reset": _mid_reply,
    "two pipelined, reset after the first answer": _pipelined_then_reset,
}


@pytest.mark.parametrize("strategy", SAFE_STRATEGIES)
async def test_disconnects_at_every_stage_under_load_never_add_or_lose_acknowledged_increments(
    start_server: StartServer, strategy: str
) -> None:
    server = await start_server(strategy, "--keep-alive", str(KEEP_ALIVE))
    assert (await request(server.port, f"/set?name={COUNTER}&val=0")).status == 200
    acknowledged = 0
    might_have_counted = 0
    per_stage: Counter[str] = Counter()
    disruptors_done = trio.Event()

    async def loader() -> None:
        nonlocal acknowledged
        while not disruptors_done.is_set():
            async with await Connection.open(server.port) as connection:
                while not disruptors_done.is_set() and connection.h11.our_state is not h11.MUST_CLOSE:
                    reply = await connection.request(f"/inc?name={COUNTER}")
                    assert reply.status == 200, reply
                    acknowledged += 1

    async def disruptor(offset: int) -> None:
        nonlocal acknowledged, might_have_counted
        stages = list(STAGES.items())
        for round_ in range(len(stages) * 4):
            stage_name, stage = stages[(offset + round_) % len(stages)]
            acked, maybe = await stage(server.port)
            acknowledged += acked
            might_have_counted += maybe
            per_stage[stage_name] += 1

    with trio.fail_after(HANG):
        async with trio.open_nursery() as clients:
            for _ in range(16):
                clients.start_soon(loader)
            async with trio.open_nursery() as disruptors:
                for offset in range(24):
                    disruptors.start_soon(disruptor, offset)
            disruptors_done.set()
        final = await value_of(server.port, COUNTER)
        assert (await request(server.port, "/get?name=i")).status == 200  # still serving
    assert final is not None
    print(
        f"{strategy}: {sum(per_stage.values())} disconnects over {len(per_stage)} stages; "
        f"acknowledged {acknowledged}, might have counted {might_have_counted}, final {final} "
        f"({final - acknowledged} of the unacknowledged counted)"
    )
    assert acknowledged <= final <= acknowledged + might_have_counted
    assert_no_tracebacks(server)
