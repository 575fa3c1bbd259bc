"""Start and stop a real server the way the README does: hypercorn's trio worker.

bench.py measures the server users run, so it starts ``hypercorn --worker-class
trio`` as a subprocess rather than an app inside its own process (which would
share one CPU core and one event loop with the client). Two rules:

* No fixed port and no sleep: hypercorn binds ``127.0.0.1:0`` and logs
  ``Running on http://127.0.0.1:PORT``; we wait for that line, with a deadline,
  and read the port from it. A server that exits first is reported with its
  exit code and the tail of its log.
* It always stops: SIGTERM (hypercorn's graceful shutdown), a bounded wait,
  then SIGKILL to the whole process group it runs in (hypercorn's parent and
  its spawned worker). The group is its own session, so a Ctrl-C typed at
  bench.py reaches bench.py alone, which then stops the server itself.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from .client import Target

__all__ = [
    "ROOT",
    "BARE_APP",
    "BACKLOG",
    "ServerError",
    "server_command",
    "strategy_server",
    "running_server",
    "worker_pid",
    "cpu_seconds",
]

ROOT = Path(__file__).resolve().parent.parent
BARE_APP = ROOT / "benchmarks" / "bare_asgi.py"
#: hypercorn's default backlog of 100 drops connects when 200 clients start at once.
BACKLOG = 1024

_RUNNING = re.compile(r"Running on http://(127\.\d+\.\d+\.\d+):(\d+)\b")


class ServerError(Exception):
    """The server could not be started; carries its exit code and its last log lines."""

    def __init__(self, message: str, returncode: int | None, log_tail: list[str]) -> None:
        super().__init__(message)
        self.message = message
        self.returncode = returncode
        self.log_tail = log_tail

    def __str__(self) -> str:
        tail = "".join(f"\n  | {line}" for line in self.log_tail) or "\n  | (no output)"
        return f"{self.message}; its last log lines:{tail}"


def server_command(app: str) -> list[str]:
    """The README's server command, on a free loopback port, for this Python."""
    return [
        sys.executable, "-m", "hypercorn",
        "--worker-class", "trio",
        "--bind", "127.0.0.1:0",
        "--backlog", str(BACKLOG),
        app,
    ]  # fmt: skip


def strategy_server(strategy: str) -> tuple[list[str], dict[str, str]]:
    """Command and environment for one strategy; ``bare`` is the no-Quart ceiling,
    ``-wN`` (``lock-w2``) asks for N hypercorn workers."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if strategy == "bare":
        return server_command(f"{BARE_APP}:app"), env
    strategy, _, workers = strategy.partition("-w")  # redis-w2: redis, 2 workers
    env["TRIO_COUNTERS_STORE"] = strategy
    command = server_command("trio_counters:app")
    if workers:
        command[-1:-1] = ["--workers", workers]
    return command, env


class _Log:
    """Drains the server's output (so its pipe never fills) and keeps the tail."""

    def __init__(self, keep: int = 20) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=keep)
        self.target: Target | None = None
        self.ended = False
        self.settled = trio.Event()  # listening, or output ended (it exited)

    async def pump(self, stream: trio.abc.ReceiveStream) -> None:
        pending = b""
        async with stream:
            while data := await stream.receive_some(65536):
                *complete, pending = (pending + data).split(b"\n")
                for raw in complete:
                    self._line(raw.decode("utf-8", "replace"))
        if pending:
            self._line(pending.decode("utf-8", "replace"))
        self.ended = True
        self.settled.set()

    def _line(self, line: str) -> None:
        self.lines.append(line.rstrip())
        if self.target is None and (match := _RUNNING.search(line)):
            self.target = Target(match[1], int(match[2]))
            self.settled.set()


async def _stop(process: trio.Process, timeout: float) -> None:
    """SIGTERM, wait up to ``timeout`` s, then SIGKILL the process group."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(timeout):
            await process.wait()
    if process.returncode is None:
        try:  # the group is still ours: its leader is not yet reaped
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        await process.wait()


@asynccontextmanager
async def running_server(
    command: list[str],
    *,
    env: Mapping[str, str] | None = None,
    startup_timeout: float = 30.0,
    stop_timeout: float = 10.0,
) -> AsyncIterator[Target]:
    """Run ``command`` until the block ends; yield where it listens.

    Raises :class:`ServerError` if it exits or stays silent past ``startup_timeout``.
    """
    process = await trio.lowlevel.open_process(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )
    log = _Log()
    failure: ServerError | None = None
    try:
        async with trio.open_nursery() as nursery:
            assert process.stdout is not None
            nursery.start_soon(log.pump, process.stdout)
            try:
                with trio.move_on_after(startup_timeout):
                    await log.settled.wait()
                if log.target is not None:
                    yield log.target
                else:
                    failure = await _startup_failure(process, log, command, startup_timeout, stop_timeout)
            finally:
                with trio.CancelScope(shield=True):
                    await _stop(process, stop_timeout)
                nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:  # only if the nursery itself failed
            with trio.CancelScope(shield=True):
                await _stop(process, 0)
    if failure is not None:  # raised out here, so not wrapped in the nursery's group
        raise failure


async def _startup_failure(
    process: trio.Process, log: _Log, command: list[str], startup_timeout: float, stop_timeout: float
) -> ServerError:
    """Why the server is not listening, with its exit code if it has one."""
    if log.ended:  # its output closed: it is exiting; get the code
        with trio.move_on_after(stop_timeout):
            await process.wait()
        message = f"the server exited with code {process.returncode} before listening"
        if process.returncode == 0:  # hypercorn's parent hides its worker's failure
            message += " (hypercorn exits 0 even when its worker failed)"
    else:
        message = f"the server did not report its address within {startup_timeout:g} s"
    return ServerError(f"{message}: {' '.join(command)}", process.returncode, list(log.lines))


def worker_pid(target: Target) -> int | None:
    """The pid of the hypercorn worker serving ``target`` (Linux), or None if not found.

    Both hypercorn's parent and its worker hold the listening socket; the worker
    is the holder whose parent holds it too.
    """
    inodes = set()
    try:
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == target.port:
                inodes.add(f"socket:[{fields[9]}]")
    except OSError:
        return None
    holders: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (entry / "fd").iterdir()):
                holders[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
    return next((pid for pid, parent in holders.items() if parent in holders), None)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
