"""How long SIGTERM takes to end the worker while clients hold it open.

``.venv/bin/python -m benchmarks.shutdown`` starts the real server (README's
command, ``--graceful-timeout 1``) once per run and sends it SIGTERM while:

- ``idle``: nothing is open -- the floor;
- ``held-http1``: ``--held`` HTTP/1.1 requests wait for bodies that never come;
- ``held-h2``: as many HTTP/2 streams, 100 per connection;
- ``flood``: four HTTP/2 clients flood PING and WINDOW_UPDATE frames, reconnecting
  each time they are cut off.

Held requests are cancelled at the graceful deadline, and unwinding each costs
the worker about a millisecond (trio's cancellation, hypercorn's and Quart's
teardown), so the time past the deadline grows with how many are held. It prints
each run's exit time and code, and per case the median and range, ``--runs``
times on each transport. Exit status: 0 if every run exited 0, else 1. Loopback only.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import struct
import sys
from functools import partial

import trio

from trio_counters.testing import HOST, TRANSPORT_ERRORS, Server, run_server
from trio_counters.testing.http2 import PING, WINDOW_UPDATE, H2Client, frame

GRACEFUL = 1.0
TRANSPORTS = ("fast", "stock")
CASES = ("idle", "held-http1", "held-h2", "flood")

_FORM_HEAD = (
    b"POST /inc HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    b"Content-Length: 10\r\n\r\nname" % HOST.encode()
)
_INC_FORM = [
    (b":method", b"POST"), (b":scheme", b"http"), (b":authority", HOST.encode()), (b":path", b"/inc"),
    (b"content-type", b"application/x-www-form-urlencoded"),
]  # fmt: skip
_FLOODS = (frame(PING, 0, 0, b"\0" * 8) * 1000, frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1)) * 1000)


async def hold_http1(port: int, held: int, sockets: list[trio.SocketStream]) -> None:
    """``held`` POSTs whose bodies stop after 4 of their 10 bytes."""
    for _ in range(held):
        stream = await trio.open_tcp_stream(HOST, port)
        sockets.append(stream)
        await stream.send_all(_FORM_HEAD)


async def hold_h2(port: int, held: int, clients: list[H2Client]) -> None:
    """``held`` HTTP/2 increments whose bodies never come, 100 per connection."""
    for first in range(0, held, 100):
        client = await H2Client.connect(port)
        clients.append(client)
        for _ in range(min(100, held - first)):
            await client.raw_request(_INC_FORM, end_stream=False)
        await client.settle()


async def flood(port: int, chunk: bytes) -> None:
    """``chunk`` over and over, on a new connection each time the server ends one."""
    while True:
        try:
            async with await H2Client.connect(port) as client:
                while not client.closed:
                    await client.send(chunk)
        except TRANSPORT_ERRORS:
            return  # the server no longer listens


async def one_run(transport: str, case: str, held: int) -> tuple[float, int]:
    """Seconds from SIGTERM to the worker's exit, and its exit code."""
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(
            partial(
                run_server,
                args=("--graceful-timeout", f"{GRACEFUL:g}"),
                env={"TRIO_COUNTERS_TRANSPORT": transport},
            )
        )
        sockets: list[trio.SocketStream] = []
        clients: list[H2Client] = []
        if case == "held-http1":
            await hold_http1(server.port, held, sockets)
        elif case == "held-h2":
            await hold_h2(server.port, held, clients)
        elif case == "flood":
            for chunk in _FLOODS * 2:
                nursery.start_soon(flood, server.port, chunk)
        await trio.sleep(0.5)  # everything sent has been read
        signalled = trio.current_time()
        server.send_signal(signal.SIGTERM)
        code = await server.wait(GRACEFUL + 30)
        took = trio.current_time() - signalled
        nursery.cancel_scope.cancel()
    for resource in [*sockets, *clients]:
        await resource.aclose()
    return took, code


async def run(args: argparse.Namespace) -> bool:
    ok = True
    print(f"SIGTERM to exit, --graceful-timeout {GRACEFUL:g} s, {args.held} held requests, {args.runs} runs")
    for transport in TRANSPORTS:
        for case in args.cases:
            times = []
            for _ in range(args.runs):
                took, code = await one_run(transport, case, args.held)
                ok &= code == 0
                times.append(took)
                print(f"  {transport:5} {case:10} exit {code} after {took:.2f} s", flush=True)
            print(
                f"{transport:5} {case:10} median {statistics.median(times):.2f} s "
                f"(range {min(times):.2f}-{max(times):.2f}), "
                f"past the deadline {statistics.median(times) - GRACEFUL:+.2f} s",
                flush=True,
            )
    return ok


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.shutdown",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--held", type=int, default=1000, help="requests held open (default 1000)")
    parser.add_argument("--runs", type=int, default=3, help="runs per case and transport (default 3)")
    parser.add_argument(
        "--cases", nargs="+", choices=CASES, default=list(CASES), help="which cases (default: all)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return 0 if trio.run(run, parse_args(argv)) else 1


if __name__ == "__main__":
    sys.exit(main())
