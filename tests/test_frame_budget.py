"""The HTTP/2 frame budget, fed bytes as a connection sends them (no server needed):
it counts frames from their headers wherever the reads split them, earns per request
and per second, and points at the first frame past it. The server's side of it (GOAWAY,
the witness, SIGTERM during floods) is in tests/test_h2_hostile.py."""

from __future__ import annotations

import struct

from trio_counters.testing.http2 import (
    CONTINUATION,
    DATA,
    END_HEADERS,
    HEADERS,
    PING,
    PREFACE,
    SETTINGS,
    frame,
)
from trio_counters.transport.frame_budget import BURST, PER_REQUEST, PER_SECOND, FrameBudget

PING_FRAME = frame(PING, 0, 0, b"\0" * 8)


def test_a_burst_of_frames_is_admitted_and_the_next_one_is_cut_where_it_starts() -> None:
    budget = FrameBudget(now=0.0)
    data = PREFACE + frame(SETTINGS, 0, 0) + PING_FRAME * BURST
    cut = budget.admit(data, now=0.0)
    # The SETTINGS and BURST - 1 PINGs fit; the last PING is the first past the budget.
    assert cut == len(data) - len(PING_FRAME)
    assert budget.frames == BURST + 1


def test_frames_split_anywhere_across_reads_are_counted_once() -> None:
    data = PREFACE + PING_FRAME * (BURST + 1)
    budget = FrameBudget(now=0.0)
    offset = 0
    cut_at = None
    for size in (1, 5, 9, 17, 30, 3, 4096) * 1000:
        if offset >= len(data):
            break
        cut = budget.admit(data[offset : offset + size], now=0.0)
        if cut is not None:
            cut_at = offset + cut
            break
        offset += size
    assert cut_at == len(PREFACE) + BURST * len(PING_FRAME)


def test_each_request_earns_frames_and_continuations_cost_nothing() -> None:
    budget = FrameBudget(now=0.0)
    assert budget.admit(PREFACE + PING_FRAME * BURST, now=0.0) is None  # the bucket is empty
    request = frame(HEADERS, 0, 1, b"\x82") + frame(CONTINUATION, END_HEADERS, 1, b"\x84")
    assert budget.admit(request, now=0.0) is None
    assert budget.admit(PING_FRAME * (PER_REQUEST - 1), now=0.0) is None
    assert budget.admit(PING_FRAME, now=0.0) == 0


def test_time_earns_frames_back_up_to_the_burst() -> None:
    budget = FrameBudget(now=0.0)
    assert budget.admit(PREFACE + PING_FRAME * BURST, now=0.0) is None
    assert budget.admit(PING_FRAME * PER_SECOND, now=1.0) is None
    assert budget.admit(PING_FRAME, now=1.0) == 0
    # An hour idle earns no more than a burst.
    budget = FrameBudget(now=0.0)
    assert budget.admit(PREFACE + PING_FRAME * (BURST + 1), now=3600.0) == len(PREFACE) + BURST * len(PING_FRAME)


def test_a_payload_is_skipped_whatever_bytes_it_holds() -> None:
    # A DATA frame whose payload looks like a thousand PING frames is one frame.
    budget = FrameBudget(now=0.0)
    body = PING_FRAME * 1000
    data = PREFACE + frame(HEADERS, END_HEADERS, 1, b"\x83") + frame(DATA, 0, 1, body[:16384])
    assert budget.admit(data, now=0.0) is None
    assert budget.frames == 2
    assert budget.admit(struct.pack(">I", 0)[1:], now=0.0) is None  # a header cut short
    assert budget.frames == 2
