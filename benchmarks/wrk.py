"""Run wrk once and read its report: the one wrk runner the benchmarks share.

``wrk -t1 -cN -dS URL``: one thread, N keep-alive connections, S seconds, a GET
of the URL over and over. wrk is Debian's ``wrk`` package (``apt-get install
wrk``); :func:`available` says whether it is on PATH.
"""

from __future__ import annotations

import re
import resource
import shutil
from dataclasses import dataclass, field

import trio

__all__ = ["WrkError", "WrkResult", "available", "parse", "run"]

_RATE = re.compile(r"Requests/sec:\s*([0-9.]+)")
_TOTAL = re.compile(r"(\d+) requests in ")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s*(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_SOCKET_KINDS = ("connect", "read", "write", "timeout")


class WrkError(Exception):
    """wrk failed, or printed a report without the figures."""


@dataclass
class WrkResult:
    """What one wrk run reported."""

    #: ``Requests/sec``: responses of any status per second.
    rate: float
    #: ``N requests in``: responses of any status.
    requests: int
    #: ``Non-2xx or 3xx responses`` (0 when wrk prints no such line).
    non_2xx: int = 0
    #: ``Socket errors``: connect, read, write and timeout counts (0 when none).
    socket_errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_SOCKET_KINDS, 0))
    #: CPU seconds wrk itself used (user + system), when it was run by :func:`run`.
    cpu_s: float = 0.0

    @property
    def errors(self) -> int:
        """Every request that went wrong: non-2xx answers and socket errors."""
        return self.non_2xx + sum(self.socket_errors.values())

    @property
    def trouble(self) -> str:
        """The errors in one line, empty when there were none."""
        parts = [f"{self.non_2xx} non-2xx"] if self.non_2xx else []
        parts += [f"{count} socket {kind}" for kind, count in self.socket_errors.items() if count]
        return ", ".join(parts)


def available() -> bool:
    return shutil.which("wrk") is not None


def parse(text: str) -> WrkResult:
    """The figures of a wrk report; :class:`WrkError` if the rate or the count is missing."""
    rate, total = _RATE.search(text), _TOTAL.search(text)
    if rate is None or total is None:
        raise WrkError(f"unexpected wrk output:\n{text}")
    result = WrkResult(float(rate[1]), int(total[1]))
    if non_2xx := _NON_2XX.search(text):
        result.non_2xx = int(non_2xx[1])
    if socket_errors := _SOCKET_ERRORS.search(text):
        result.socket_errors = dict(zip(_SOCKET_KINDS, map(int, socket_errors.groups()), strict=True))
    return result


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def run(url: str, connections: int, duration: float) -> WrkResult:
    """``wrk -t1 -c{connections} -d{duration}s url``, parsed; its CPU time from the
    kernel's account of this process's finished children."""
    cpu = _children_cpu()
    with trio.fail_after(duration + 30):
        done = await trio.run_process(
            ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", url],
            capture_stdout=True, capture_stderr=True, check=False,
        )  # fmt: skip
    cpu = _children_cpu() - cpu
    text = done.stdout.decode(errors="replace")
    if done.returncode != 0:
        raise WrkError(f"wrk exited with {done.returncode} on {url}: {text}{done.stderr.decode(errors='replace')}")
    result = parse(text)
    result.cpu_s = cpu
    return result
