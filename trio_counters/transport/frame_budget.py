"""How many HTTP/2 frames a connection may send for the requests it makes.

h2 parses every frame in Python, and some make work without making a request: a
SETTINGS frame costs about 35 µs and an answer, a PING about 20 µs and an answer.
100,000 of them on one connection are a few seconds of the worker's only core, and
hypercorn parses a whole 64 KiB read (about 4,000 frames) in one scheduling step:
four such connections held every other client up for 5 s, and a SIGTERM during the
flood took 5.6-6.5 s to end the worker, not ``--graceful-timeout`` (3 s) plus a
second. :class:`FrameBudget` counts frames from their 9-byte headers before h2 reads
them, as a token bucket: a connection may send :data:`BURST` frames at once, earns
:data:`PER_REQUEST` for every request (HEADERS) it opens and :data:`PER_SECOND` as
time passes, up to :data:`BURST`. The frame that overdraws it is never parsed; the
connection gets GOAWAY with ENHANCE_YOUR_CALM
(:class:`~trio_counters.transport.protocol.GuardedH2Protocol`).

CONTINUATION frames are not counted: h2 refuses a header block in more than 64 of
them. A request's body is at most 4 KiB here, so a well-behaved client sends a
DATA frame or two per request, and a WINDOW_UPDATE or a PRIORITY now and then; an
idle one a PING now and then. None comes near the budget (``tests/test_h2_hostile.py``).
"""

from __future__ import annotations

__all__ = ["BURST", "PER_REQUEST", "PER_SECOND", "FrameBudget"]

#: Frames a connection may send at once: the bucket's size, and what it starts with.
BURST = 1000
#: Frames earned by each HEADERS frame (a request, with its body, window updates, a reset).
PER_REQUEST = 10
#: Frames earned per second, whatever the connection does (keep-alive PINGs, say).
PER_SECOND = 100

_PREFACE = len(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
_HEADERS, _CONTINUATION = 0x1, 0x9


class FrameBudget:
    """One HTTP/2 connection's frame budget, fed the bytes h2 will read, in order."""

    def __init__(self, now: float) -> None:
        self._tokens = float(BURST)
        self._time = now
        #: Bytes still to pass over: the client's preface, then each frame's payload.
        self._skip = _PREFACE
        #: A frame header split across reads.
        self._header = bytearray()
        #: Frames counted against the budget so far, for the log.
        self.frames = 0

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
            self._skip = int.from_bytes(self._header[:3], "big")
            kind = self._header[3]
            self._header.clear()
            if kind == _CONTINUATION:
                continue
            self.frames += 1
            self._tokens -= 1
            if kind == _HEADERS:
                self._tokens = min(BURST, self._tokens + PER_REQUEST)
            elif self._tokens < 0:
                return max(start, 0)
        return None
