"""Oversized requests, end to end: the real hypercorn process refuses each with a 4xx
and creates nothing.

Request lines, query strings, single headers, header blocks and bodies past the
limits (the app's own, and hypercorn's for a request head still unfinished after a
read) all get their 4xx; a query string exactly at the limit is served. A refusal by
hypercorn also closes the connection, promptly: the server's keep-alive timer is set
far beyond the wait, so the close is the refusal's.

Each test prints what it measured (``pytest -s`` shows it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio

from trio_counters.app import MAX_BODY_BYTES, MAX_QUERY_BYTES
from trio_counters.config import SAFE_STRATEGIES
from trio_counters.testing import Outcome, Server, exchange, value_of
from trio_counters.testing.checks import assert_no_tracebacks

#: ``--keep-alive`` here, in seconds: far beyond :data:`CLOSE_WITHIN`, so a connection
#: closed within that was closed by the refusal, not reaped as idle.
KEEP_ALIVE = 60
#: How long a refused connection may take to close: well below the keep-alive.
CLOSE_WITHIN = KEEP_ALIVE / 2
#: hypercorn's ``h11_max_incomplete_size``: an unfinished request head past it gets 431.
H11_MAX_INCOMPLETE = 16 * 1024
#: hypercorn reads at most this much per receive (``hypercorn/trio/tcp_server.py`` MAX_RECV).
MAX_RECV = 64 * 1024


def _request(target: str, headers: bytes = b"", method: bytes = b"GET", body: bytes = b"") -> bytes:
    return method + b" " + target.encode() + b" HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n" + body


def _query_of_length(name: str, length: int) -> str:
    """``name=NAME&val=1&pad=...``, exactly ``length`` bytes long."""
    start = f"name={name}&val=1&pad="
    return start + "p" * (length - len(start))


_FORM = b"Content-Type: application/x-www-form-urlencoded\r\n"

#: (id, raw request, the statuses allowed, the counter it would have created).
#:
#: hypercorn's 16 KiB limit (``h11_max_incomplete_size``) applies to a request head
#: that is still *unfinished* after a read; a whole head that arrives in one read of
#: up to 64 KiB (MAX_RECV) is parsed by hypercorn whatever its size, so the app
#: refuses headers over 16 KiB itself (MAX_HEADER_BYTES, 431).
OVERSIZED: list[tuple[str, bytes, set[int], str]] = [
    (
        f"query string of {MAX_QUERY_BYTES + 1} B",
        _request("/set?" + _query_of_length("o1", MAX_QUERY_BYTES + 1)),
        {414},
        "o1",
    ),
    ("query string of 15 KiB", _request("/set?" + _query_of_length("o2", 15 * 1024)), {414}, "o2"),
    (
        "request line of 17 KiB, unfinished",
        b"GET /set?" + _query_of_length("o3", H11_MAX_INCOMPLETE + 1024).encode(),
        {431},
        "o3",
    ),
    (
        "request line of 68 KiB",
        _request("/set?" + _query_of_length("o4", MAX_RECV + 4 * 1024)),
        {431},
        "o4",
    ),
    (
        "header block of 17 KiB, unfinished",
        b"GET /set?name=o5&val=1 HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * (H11_MAX_INCOMPLETE + 1024),
        {431},
        "o5",
    ),
    (
        "one header of 20 KiB, complete",
        _request("/set?name=o12&val=1", b"X-Big: " + b"b" * (20 * 1024) + b"\r\n"),
        {431},
        "o12",
    ),
    (
        "one header of 68 KiB",
        _request("/set?name=o6&val=1", b"X-Big: " + b"b" * (MAX_RECV + 4 * 1024) + b"\r\n"),
        {431},
        "o6",
    ),
    (
        "10,000 headers (90 KiB)",
        _request("/set?name=o7&val=1", b"".join(b"X-%05d: v\r\n" % n for n in range(10_000))),
        {431},
        "o7",
    ),
    (
        f"form body of {MAX_BODY_BYTES + 1} B",
        _request(
            "/set", _FORM + b"Content-Length: %d\r\n" % (MAX_BODY_BYTES + 1), b"POST",
            b"name=o8&val=1&pad=" + b"p" * (MAX_BODY_BYTES + 1 - 18),
        ),
        {413},
        "o8",
    ),
    (
        "Content-Length of 1 GB, no body",
        _request("/set?name=o9&val=1", _FORM + b"Content-Length: 1000000000\r\n", b"POST"),
        {413},
        "o9",
    ),
    (
        "chunked form body of 5000 B",
        _request(
            "/set", _FORM + b"Transfer-Encoding: chunked\r\n", b"POST",
            b"%x\r\n" % 5000 + (b"name=o10&val=1&pad=" + b"p" * 5000)[:5000] + b"\r\n0\r\n\r\n",
        ),
        {413},
        "o10",
    ),
    ("inc with a 5000 B query string", _request("/inc?name=i&pad=" + "p" * 5000), {414}, "o11"),
]  # fmt: skip


@pytest.mark.parametrize("strategy", SAFE_STRATEGIES)
async def test_oversized_requests_are_refused_with_4xx_and_create_nothing(
    start_server: Callable[..., Awaitable[Server]], strategy: str
) -> None:
    server = await start_server(strategy, "--keep-alive", str(KEEP_ALIVE))
    with trio.fail_after(KEEP_ALIVE):
        # The limit is where the README says: a query string of exactly 4096 bytes is fine.
        raw = _request("/set?" + _query_of_length("o0", MAX_QUERY_BYTES))
        at_limit = await exchange(server.port, raw, deadline=CLOSE_WITHIN)
        assert at_limit.status == 200, at_limit
        outcomes: dict[str, Outcome] = {}

        async def one(case_id: str, raw: bytes) -> None:
            outcomes[case_id] = await exchange(server.port, raw, deadline=CLOSE_WITHIN)

        async with trio.open_nursery() as cases:
            for case_id, raw, _, _ in OVERSIZED:
                cases.start_soon(one, case_id, raw)
        for case_id, _, allowed, _ in OVERSIZED:
            print(f"{strategy}: {case_id}: {outcomes[case_id]}")
        for case_id, _, allowed, name in OVERSIZED:
            assert outcomes[case_id].status in allowed, (case_id, outcomes[case_id])
            if outcomes[case_id].status == 431 and name != "o12":
                # hypercorn's refusal also closes; the app's own 431 (o12: a complete
                # head, refused by the app like a long query) keeps the connection.
                assert outcomes[case_id].closed, (case_id, outcomes[case_id])
            assert await value_of(server.port, name) is None, f"{case_id} created {name}"
        assert await value_of(server.port, "o0") == 1
        assert await value_of(server.port, "i") == 0
    assert_no_tracebacks(server)
