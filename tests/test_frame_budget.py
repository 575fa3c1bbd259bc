"""The HTTP/2 frame budget, fed bytes as a connection sends them (no server needed):
it counts frames from their headers wherever the reads split them, earns per request
and per second, lets a body's DATA frames through, bounds a header block, and points
at the first frame past it. The server's side of it (GOAWAY,
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
from trio_counters.transport.frame_budget import (
    BURST,
    FREE_DATA,
    MAX_HEADER_BLOCK,
    PER_REQUEST,
    PER_SECOND,
    FrameBudget,
)

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
    # A DATA frame whose payload looks like a thousand PING frames is one frame (and,
    # carrying a body, a free one).
    budget = FrameBudget(now=0.0)
    body = PING_FRAME * 1000
    data = PREFACE + frame(HEADERS, END_HEADERS, 1, b"\x83") + frame(DATA, 0, 1, body[:16384])
    assert budget.admit(data, now=0.0) is None
    assert budget.frames == 1
    assert budget.admit(struct.pack(">I", 0)[1:], now=0.0) is None  # a header cut short
    assert budget.frames == 1


def test_a_body_in_small_pieces_is_free_and_empty_or_tiny_data_frames_count() -> None:
    budget = FrameBudget(now=0.0)
    assert budget.admit(PREFACE + frame(DATA, 0, 1, b"x" * FREE_DATA) * (2 * BURST), now=0.0) is None
    assert budget.frames == 0
    tiny = frame(DATA, 0, 1, b"x" * (FREE_DATA - 1))
    assert budget.admit(tiny * BURST, now=0.0) is None
    assert budget.admit(frame(DATA, 0, 1), now=0.0) == 0
    assert budget.exceeded == "frames"


def test_only_headers_opening_a_new_stream_earn_frames() -> None:
    budget = FrameBudget(now=0.0)
    assert budget.admit(PREFACE + frame(HEADERS, END_HEADERS, 5, b"\x82") + PING_FRAME * (BURST - 1), now=0.0) is None
    # Trailers, or HEADERS on a stream closed already (h2 decodes the block and answers).
    again = frame(HEADERS, END_HEADERS, 5, b"\x82") + frame(HEADERS, END_HEADERS, 3, b"\x82")
    assert budget.admit(again, now=0.0) == len(frame(HEADERS, END_HEADERS, 5, b"\x82"))


def test_a_header_block_over_the_bound_is_cut_at_the_frame_that_overflows_it() -> None:
    budget = FrameBudget(now=0.0)
    first = frame(HEADERS, 0, 1, b"\0" * (MAX_HEADER_BLOCK - 10))
    fits = frame(CONTINUATION, 0, 1, b"\0" * 10)
    assert budget.admit(PREFACE + first + fits, now=0.0) is None
    assert budget.admit(frame(CONTINUATION, END_HEADERS, 1, b"\0"), now=0.0) == 0
    assert budget.exceeded == "header block"
    # Each block is bounded on its own: a full block, ended, then another.
    budget = FrameBudget(now=0.0)
    full = frame(HEADERS, END_HEADERS, 1, b"\0" * MAX_HEADER_BLOCK)
    assert budget.admit(PREFACE + full + frame(HEADERS, END_HEADERS, 3, b"\0" * MAX_HEADER_BLOCK), now=0.0) is None


def test_a_settings_frame_counts_once_per_setting() -> None:
    budget = FrameBudget(now=0.0)
    settings = frame(SETTINGS, 0, 0, b"\0" * 6 * 500)
    assert budget.admit(PREFACE + settings, now=0.0) is None  # 500 of the 1,000
    assert budget.admit(settings + settings, now=0.0) == len(settings)
    assert budget.frames == 3


def test_a_refused_request_forfeits_what_it_earned() -> None:
    budget = FrameBudget(now=0.0)
    assert budget.admit(PREFACE + PING_FRAME * BURST, now=0.0) is None  # the bucket is empty
    assert budget.admit(frame(HEADERS, END_HEADERS, 1, b"\x82"), now=0.0) is None
    budget.forfeit_request()
    assert budget.admit(PING_FRAME, now=0.0) == 0
