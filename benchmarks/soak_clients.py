"""The soak's books and its well-behaved clients (``python -m benchmarks.soak``).

:class:`Books` is kept from the client side: every ``/inc`` that got 200 is
*acknowledged*; one whose full request went out but whose answer never came (the
client hung up) *might have counted*. :class:`WellBehaved` sends mixed traffic
and checks every answer against its model; the misbehaving clients are in
:mod:`benchmarks.soak_misbehaving`. Requests are raw bytes over
:class:`trio_counters.testing.Raw`, so nothing between the soak and the server
rewrites or retries them.
"""

from __future__ import annotations

import collections
import dataclasses
import random
from collections import Counter
from collections.abc import Awaitable, Callable

import trio

from trio_counters.testing import TRANSPORT_ERRORS, Raw, RawResponse, form_post_bytes, get_bytes

#: The app's own limits (trio_counters/app.py), repeated so the soak can run
#: against any checkout; a mismatch shows up as unexpected statuses.
MAX_QUERY_BYTES = 4096
MAX_BODY_BYTES = 4096
BODY_TIMEOUT = 10.0
#: hypercorn's h11_max_incomplete_size and its read size.
H11_MAX_INCOMPLETE = 16 * 1024
MAX_RECV = 64 * 1024

#: Slack on every deadline; a healthy run never waits for it.
SLACK = 5.0
#: A well-behaved request that takes longer than this is an error.
REQUEST_TIMEOUT = 5.0

SHARED = [f"soak-s-{n}" for n in range(100)]
DISRUPTED = [f"soak-d-{n}" for n in range(10)]

#: A connection that broke, or closed before a whole response came.
BROKEN = (*TRANSPORT_ERRORS, EOFError)


# --------------------------------------------------------------------------------------
# The books


@dataclasses.dataclass
class Books:
    requests: int = 0  # well-behaved requests answered
    close_mode: int = 0  # of which on a connection of their own
    statuses: Counter[int] = dataclasses.field(default_factory=Counter)
    misbehaving: Counter[str] = dataclasses.field(default_factory=Counter)
    unexpected: Counter[str] = dataclasses.field(default_factory=Counter)
    examples: dict[str, list[str]] = dataclasses.field(default_factory=lambda: collections.defaultdict(list))
    acknowledged: Counter[str] = dataclasses.field(default_factory=Counter)
    might_have_counted: Counter[str] = dataclasses.field(default_factory=Counter)
    models: dict[str, int | None] = dataclasses.field(default_factory=dict)
    timings: dict[str, list[float]] = dataclasses.field(default_factory=lambda: collections.defaultdict(list))

    def error(self, kind: str, detail: str) -> None:
        self.unexpected[kind] += 1
        if len(self.examples[kind]) < 3:
            self.examples[kind].append(detail)

    def sending_inc(self, name: str) -> None:
        """A whole /inc is about to go out: from here it might count."""
        self.might_have_counted[name] += 1

    def answered_inc(self, name: str, status: int) -> None:
        self.might_have_counted[name] -= 1
        if status == 200:
            self.acknowledged[name] += 1


# --------------------------------------------------------------------------------------
# Connections


class KeepAliveClient:
    """One keep-alive connection at a time (a new one when the server asks to close)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.raw: Raw | None = None
        #: Where the current request is, for reporting one that never ends.
        self.phase = ""
        self.served = 0  # requests answered on the current connection

    async def request(self, data: bytes) -> RawResponse:
        if self.raw is None:
            self.phase = "connecting"
            self.raw = await Raw.connect(self.port)
            self.served = 0
        try:
            self.phase = f"sending request {self.served + 1} of a keep-alive connection"
            await self.raw.send(data)
            self.phase = f"awaiting the answer to request {self.served + 1} of a keep-alive connection"
            response = await self.raw.response()
            self.served += 1
        except BaseException:
            await self.aclose()
            raise
        if response.close:  # hypercorn's keep_alive_max_requests (1000) was reached
            await self.aclose()
        return response

    async def aclose(self) -> None:
        if self.raw is not None:
            raw, self.raw = self.raw, None
            with trio.CancelScope(shield=True):
                await raw.aclose()


async def close_mode_request(port: int, data: bytes, phase: list[str] | None = None) -> RawResponse:
    """A request on a connection of its own, which the server must then close.
    ``phase[0]`` says where it is, for reporting one that never ends."""
    phase = phase if phase is not None else [""]
    phase[0] = "connecting (close mode)"
    async with await Raw.connect(port) as raw:
        phase[0] = "sending (close mode)"
        await raw.send(data)
        phase[0] = "awaiting the answer (close mode)"
        response = await raw.response()
        phase[0] = "answered, awaiting the server's close (close mode)"
        rest = await raw.closed()
    if rest:
        raise ConnectionError(f"bytes after the response: {rest[:60]!r}")
    return response


# --------------------------------------------------------------------------------------
# Well-behaved clients


class WellBehaved:
    """Mixed traffic from one client; every answer is checked."""

    def __init__(self, port: int, books: Books, ident: int, rng: random.Random, close_mode: bool) -> None:
        self.port = port
        self.books = books
        self.rng = rng
        self.close_mode = close_mode
        self.owned = [f"soak-o-{ident}-{n}" for n in range(5)]
        for name in self.owned:
            books.models[name] = None
        self.connection = KeepAliveClient(port)

    async def _send(self, data: bytes) -> RawResponse:
        phase = [""]
        try:
            with trio.fail_after(REQUEST_TIMEOUT):
                if self.close_mode:
                    response = await close_mode_request(self.port, data, phase)
                    self.books.close_mode += 1
                else:
                    response = await self.connection.request(data)
        except trio.TooSlowError:
            where = phase[0] if self.close_mode else self.connection.phase
            line = data.split(b"\r\n", 1)[0].decode()
            self.books.error("well-behaved request timed out", f"{line!r}: {where} after {REQUEST_TIMEOUT:g} s")
            raise
        self.books.requests += 1
        if response.status != 200:
            self.books.statuses[response.status] += 1
        return response

    def _expect(self, what: str, response: RawResponse, status: int, body: bytes | None = None) -> None:
        if response.status != status or (body is not None and response.body != body):
            self.books.error(
                f"wrong answer to {what}", f"expected {status} {body!r}, got {response.status} {response.body!r}"
            )

    async def one(self) -> None:
        rng = self.rng
        choice = rng.random()
        version = "1.0" if self.close_mode and rng.random() < 0.5 else "1.1"
        headers = ("Connection: close",) if self.close_mode and version == "1.1" else ()

        def get(target: str) -> bytes:
            return get_bytes(target, *headers, version=version)

        if choice < 0.40:  # inc a shared counter
            name = rng.choice(SHARED)
            self.books.sending_inc(name)
            response = await self._send(get(f"/inc?name={name}"))
            self.books.answered_inc(name, response.status)
            self._expect("inc", response, 200, b"ok\n")
        elif choice < 0.45:  # the same, as a form POST
            name = rng.choice(SHARED)
            self.books.sending_inc(name)
            response = await self._send(form_post_bytes("/inc", f"name={name}".encode(), *headers, version=version))
            self.books.answered_inc(name, response.status)
            self._expect("form inc", response, 200, b"ok\n")
        elif choice < 0.55:  # inc a disrupted counter
            name = rng.choice(DISRUPTED)
            self.books.sending_inc(name)
            response = await self._send(get(f"/inc?name={name}"))
            self.books.answered_inc(name, response.status)
            self._expect("inc", response, 200, b"ok\n")
        elif choice < 0.65:  # set an owned counter
            name = rng.choice(self.owned)
            value = rng.randrange(-(2**40), 2**40)
            response = await self._send(get(f"/set?name={name}&val={value}"))
            self._expect("set", response, 200, b"ok\n")
            if response.status == 200:
                self.books.models[name] = value
        elif choice < 0.75:  # inc an owned counter (404 until it is set)
            name = rng.choice(self.owned)
            response = await self._send(get(f"/inc?name={name}"))
            model = self.books.models[name]
            if model is None:
                self._expect("inc of an unset counter", response, 404)
            else:
                self._expect("inc", response, 200, b"ok\n")
                if response.status == 200:
                    self.books.models[name] = model + 1
        elif choice < 0.90:  # get an owned counter: must match the model
            name = rng.choice(self.owned)
            response = await self._send(get(f"/get?name={name}"))
            model = self.books.models[name]
            if model is None:
                self._expect("get of an unset counter", response, 404)
            else:
                self._expect("get", response, 200, f"{name}: {model}\n".encode())
        elif choice < 0.95:  # get a counter that does not exist
            response = await self._send(get(f"/get?name=soak-missing-{rng.randrange(10**6)}"))
            self._expect("get of a missing counter", response, 404)
        else:  # a value that is not an integer
            response = await self._send(get(f"/set?name={rng.choice(self.owned)}&val=1.5"))
            self._expect("set with a bad value", response, 400)

    async def run(self, stopping: trio.Event) -> None:
        try:
            while not stopping.is_set():
                try:
                    await self.one()
                except trio.TooSlowError:
                    pass  # booked by _send
                except BROKEN as error:
                    self.books.error("well-behaved connection broke", repr(error))
        finally:
            await self.connection.aclose()


async def loop(action: Callable[[], Awaitable[None]], stopping: trio.Event, books: Books, kind: str) -> None:
    """Run ``action`` again and again until ``stopping``; a broken connection is an error."""
    while not stopping.is_set():
        try:
            await action()
        except BROKEN as error:
            books.error(f"{kind}: connection failed", repr(error))
