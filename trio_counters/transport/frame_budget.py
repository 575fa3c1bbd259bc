"""How many HTTP/2 frames, and how large a header block, a connection may send.

h2 parses every frame in Python, and some make work without making a request: a
SETTINGS frame costs about 35 µs and an answer, a PING about 20 µs and an answer.
100,000 of them on one connection are a few seconds of the worker's only core, and
hypercorn parsed a whole 64 KiB read (about 4,000 frames) in one scheduling step:
four such connections held every other client up for 5 s, and a SIGTERM during the
flood took 5.6-6.5 s to end the worker, not ``--graceful-timeout`` (3 s) plus a
second. :class:`FrameBudget` counts frames from their 9-byte headers before h2 reads
them, as a token bucket: a connection may send :data:`BURST` frames at once, earns
:data:`PER_REQUEST` for every request it opens (a HEADERS frame on a new stream) and
:data:`PER_SECOND` as time passes, up to :data:`BURST`. The frame that overdraws it
is never parsed; the connection gets GOAWAY with ENHANCE_YOUR_CALM
(:class:`~trio_counters.transport.protocol.GuardedH2Protocol`).

A SETTINGS frame counts once per setting it carries (h2 spends about 15 µs on each:
one 16 KiB frame of 2,730 unknown settings took it 40-55 ms). A request refused
unstarted (a bad method or target, the worker's stream bound) forfeits what it
earned. What is free: CONTINUATION frames (h2 refuses a header block in more than 64 of
them), and DATA frames that carry at least :data:`FREE_DATA` bytes of a body -- a
client may send a body in small pieces, and per byte such a frame costs h2 a tenth
of what a SETTINGS frame does. Empty and smaller DATA frames count.

And one header block (a HEADERS frame and its CONTINUATIONs) may hold at most
:data:`MAX_HEADER_BLOCK` bytes: h2 decodes a block whole, in one step, once its last
frame is in, and a 1 MiB block of Huffman-coded bytes took it 0.2-0.4 s -- 40
connections sending them held other clients up 7-13 s and a SIGTERM 8-21 s. Decoded,
a request's headers may not pass 16 KiB here anyway (431).

A well-behaved client -- a DATA frame or a few per request, a WINDOW_UPDATE or a
PRIORITY now and then, an idle one a PING now and then -- never comes near the
budget (``tests/test_h2_hostile.py``).
"""

from __future__ import annotations

__all__ = ["BURST", "FREE_DATA", "MAX_HEADER_BLOCK", "PER_REQUEST", "PER_SECOND", "FrameBudget"]

#: Frames a connection may send at once: the bucket's size, and what it starts with.
BURST = 1000
#: Frames earned by each request (its HEADERS, a window update, a reset, a PING).
PER_REQUEST = 10
#: Frames earned per second, whatever the connection does (keep-alive PINGs, say).
PER_SECOND = 100
#: A DATA frame carrying at least this many bytes costs nothing.
FREE_DATA = 64
#: The most bytes one header block (HEADERS or PUSH_PROMISE and its CONTINUATIONs) may hold.
MAX_HEADER_BLOCK = 16384

_PREFACE = len(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
_DATA, _HEADERS, _SETTINGS, _PUSH_PROMISE, _CONTINUATION = 0x0, 0x1, 0x4, 0x5, 0x9
_END_HEADERS = 0x4


class FrameBudget:
    """One HTTP/2 connection's frame budget, fed the bytes h2 will read, in order."""

    def __init__(self, now: float) -> None:
        self._tokens = float(BURST)
        self._time = now
        #: Bytes still to pass over: the client's preface, then each frame's payload.
        self._skip = _PREFACE
        #: A frame header split across reads.
        self._header = bytearray()
        #: The highest stream a HEADERS frame has opened: one on a stream at or
        #: below it is trailers, or for a stream closed already, and earns nothing.
        self._last_stream = 0
        #: The bytes of the header block still open (its END_HEADERS not yet read), or None.
        self._block: int | None = None
        #: Frames counted against the budget so far, for the log.
        self.frames = 0
        #: Why :meth:`admit` cut the data: ``"frames"`` or ``"header block"``.
        self.exceeded: str | None = None

    def admit(self, data: bytes, now: float) -> int | None:
        """Count the frames that start in ``data``: None if the budget holds them all,
        else the offset in ``data`` of the first frame past it (h2 reads none of it)."""
        self._tokens = min(BURST, self._tokens + (now - self._time) * PER_SECOND)
        self._time = now
        size = len(data)
        at = 0
        while at < size:
            if self._skip:
                step = min(self._skip, size - at)
                self._skip -= step
                at += step
                continue
            start = at - len(self._header)  # negative if the header began in an earlier read
            take = 9 - len(self._header)
            self._header += data[at : at + take]
            at += take
            if len(self._header) < 9:
                break
            length = self._skip = int.from_bytes(self._header[:3], "big")
            kind, flags = self._header[3], self._header[4]
            stream = int.from_bytes(self._header[5:9], "big") & 0x7FFFFFFF
            self._header.clear()
            if kind in (_HEADERS, _PUSH_PROMISE, _CONTINUATION):
                block = length if kind != _CONTINUATION or self._block is None else self._block + length
                if block > MAX_HEADER_BLOCK:
                    self.exceeded = "header block"
                    return max(start, 0)
                self._block = None if flags & _END_HEADERS else block
                if kind == _CONTINUATION:
                    continue
            elif kind == _DATA and length >= FREE_DATA:
                continue
            self.frames += 1
            # A SETTINGS frame costs h2 about 15 µs a setting: one frame per setting.
            self._tokens -= max(1, length // 6) if kind == _SETTINGS else 1
            if kind == _HEADERS and stream > self._last_stream:
                self._last_stream = stream
                self._tokens = min(BURST, self._tokens + PER_REQUEST)
            elif self._tokens < 0:
                self.exceeded = "frames"
                return max(start, 0)
        return None

    def forfeit_request(self) -> None:
        """Take back what a request earned: it was refused unstarted (a bad method or
        target, the worker's stream bound), so it cost the worker next to nothing and
        must not pay for other frames."""
        self._tokens -= PER_REQUEST
