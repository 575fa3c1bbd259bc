"""Run the real server the way the README does: ``hypercorn --worker-class trio``.

One launcher for every test and benchmark. It follows the nursery start protocol,
as hypercorn's own ``serve(..., task_status=...)`` does::

    server = await nursery.start(run_server)            # in a test
    async with serving(env={...}) as server: ...        # in a script

and reports a :class:`Server` once hypercorn has said where it listens. Three rules:

* No fixed port and no sleep: hypercorn binds ``127.0.0.1:0`` and logs
  ``Running on http://127.0.0.1:PORT``; the port is read from that line, with a
  deadline. A server that exits or stays silent first is a :class:`ServerError`
  carrying its exit code and the tail of its log.
* It always stops: leaving (or cancelling) sends SIGTERM, hypercorn's graceful
  shutdown, then after ``stop_timeout`` SIGKILL to the whole process group.
  The server runs in a session of its own, so a Ctrl-C typed at a benchmark
  reaches the benchmark alone, which then stops the server itself.
* Its output is drained as it comes (a full pipe would block the server) and
  kept, so a test can read the whole log and a failure can show its tail.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial

import trio

from .process import worker_pid

__all__ = [
    "HOST",
    "README_ARGS",
    "STARTUP_TIMEOUT",
    "STOP_TIMEOUT",
    "Server",
    "ServerError",
    "server_command",
    "run_server",
    "serving",
]

#: Every server here listens on loopback only.
HOST = "127.0.0.1"
#: The flags the README's run command adds: hypercorn serves in its own process, so
#: a crash exits non-zero (with worker processes its parent exits 0 whatever its
#: worker did; trio_counters makes SIGTERM and Ctrl-C graceful there), and a listen
#: backlog that holds 200 simultaneous connects (hypercorn's default of 100 drops
#: some). A later ``--workers N`` in a test's ``args`` overrides the first.
README_ARGS = ("--workers", "0", "--backlog", "1024")
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

_RUNNING = re.compile(rb"Running on http://127\.0\.0\.1:(\d+)\b")
_LOG_RECORD = re.compile(r"^(?=\[\d{4}-\d\d-\d\d )", re.MULTILINE)


class ServerError(Exception):
    """The server could not be started: its exit code, if any, and its last log lines."""

    def __init__(self, message: str, returncode: int | None, log_tail: list[str]) -> None:
        super().__init__(message)
        self.message = message
        self.returncode = returncode
        self.log_tail = log_tail

    def __str__(self) -> str:
        tail = "".join(f"\n  | {line}" for line in self.log_tail) or "\n  | (no output)"
        return f"{self.message}; its last log lines:{tail}"


@dataclasses.dataclass
class Server:
    """A running hypercorn: its parent process, where it listens, and its log so far."""

    process: trio.Process
    port: int
    command: list[str]
    output: bytearray
    host: str = HOST

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def worker(self) -> int:
        """The process that serves: hypercorn's worker (or the parent with ``--workers 0``)."""
        return worker_pid(self.process.pid)

    @property
    def log(self) -> str:
        """Everything the server has printed so far (stdout and stderr)."""
        return self.output.decode(errors="replace")

    def tail(self, lines: int = 20) -> list[str]:
        return self.log.splitlines()[-lines:]

    def tracebacks(self) -> list[str]:
        """The log records with a traceback in them."""
        return [record for record in _LOG_RECORD.split(self.log) if "Traceback" in record]

    def send_signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    async def wait(self, timeout: float) -> int:
        """Wait for the process to exit by itself; its exit code."""
        with trio.fail_after(timeout):
            return await self.process.wait()


def server_command(app: str = "trio_counters:app", *args: str) -> list[str]:
    """The README's server command, on a free loopback port, for this Python."""
    return [
        sys.executable, "-m", "hypercorn",
        "--worker-class", "trio",
        "--bind", f"{HOST}:0",
        *README_ARGS,
        *args,
        app,
    ]  # fmt: skip


async def run_server(
    app: str = "trio_counters:app",
    *,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    cwd: str | os.PathLike[str] | None = None,
    startup_timeout: float = STARTUP_TIMEOUT,
    stop_timeout: float = STOP_TIMEOUT,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` with hypercorn's trio worker on 127.0.0.1 until cancelled, or until
    the process exits by itself (a test that sent it a signal, say).

    ``env`` is added to this process's environment; ``args`` go to hypercorn before
    the app (``--keep-alive 2``, ``--workers 2``). ``cwd`` is where it runs: hypercorn
    imports the app's module from there (``benchmarks.bare_asgi:app`` needs the
    repository root).
    """
    command = server_command(app, *args)
    process = await trio.lowlevel.open_process(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        cwd=cwd,
        start_new_session=True,
    )
    output = bytearray()
    listening = trio.Event()  # set on the "Running on" line, or when the output ends
    failure: ServerError | None = None

    async def pump() -> None:
        assert process.stdout is not None
        while chunk := await process.stdout.receive_some(65536):
            output.extend(chunk)
            if not listening.is_set() and _RUNNING.search(output):
                listening.set()
        listening.set()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump)
            with trio.move_on_after(startup_timeout):
                await listening.wait()
            match = _RUNNING.search(output)
            if match is None:
                ended = listening.is_set()  # the output closed: it is exiting
                failure = await _startup_failure(process, output, command, ended, startup_timeout)
                nursery.cancel_scope.cancel()
            else:
                task_status.started(Server(process, int(match[1]), command, output))
                await process.wait()  # the pump drains the rest, then the nursery ends
    finally:
        with trio.CancelScope(shield=True):
            await _stop(process, stop_timeout)
            await _drain(process, output, stop_timeout)
    if failure is not None:  # raised out here, so not wrapped in the nursery's group
        raise failure


@asynccontextmanager
async def serving(app: str = "trio_counters:app", **options: object) -> AsyncIterator[Server]:
    """:func:`run_server` for the length of an ``async with`` block."""
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(partial(run_server, app, **options))  # type: ignore[arg-type]
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()


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


async def _drain(process: trio.Process, output: bytearray, timeout: float) -> None:
    """Keep what the server printed while it stopped (a cancel stops the pump first),
    so :attr:`Server.log` is whole once the server is gone; then close the pipe."""
    assert process.stdout is not None
    with trio.move_on_after(timeout):
        while chunk := await process.stdout.receive_some(65536):
            output.extend(chunk)
    await process.stdout.aclose()


async def _startup_failure(
    process: trio.Process, output: bytearray, command: list[str], ended: bool, startup_timeout: float
) -> ServerError:
    """Why the server is not listening, with its exit code if it has one."""
    if ended:
        with trio.move_on_after(STOP_TIMEOUT):
            await process.wait()
    if process.returncode is not None:
        message = f"the server exited with code {process.returncode} before listening"
        if process.returncode == 0:  # hypercorn's parent hides its worker's failure
            message += " (hypercorn exits 0 even when its worker failed)"
    else:
        message = f"the server did not report its address within {startup_timeout:g} s"
    tail = output.decode(errors="replace").splitlines()[-20:]
    return ServerError(f"{message}: {' '.join(command)}", process.returncode, tail)
