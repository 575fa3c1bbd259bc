"""Run the real ``hypercorn --worker-class trio`` in a subprocess, on a free port.

Started with the nursery start protocol: ``server = await nursery.start(run_hypercorn)``
returns once hypercorn has said where it listens, so no test sleeps or guesses a port.
Leaving the nursery (or cancelling it) stops the process.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence

import trio

__all__ = ["Server", "run_hypercorn", "README_ARGS", "STARTUP_TIMEOUT"]

STARTUP_TIMEOUT = 30
#: The flags the README's run command adds: a listen backlog that holds 200
#: simultaneous connects (hypercorn's default of 100 drops some).
README_ARGS = ("--backlog", "1024")
_RUNNING = re.compile(rb"Running on http://127\.0\.0\.1:(\d+)")


@dataclasses.dataclass
class Server:
    process: trio.Process
    port: int
    output: bytearray

    @property
    def log(self) -> str:
        return self.output.decode(errors="replace")

    async def wait(self, timeout: float) -> int:
        """Wait for the process to exit by itself; its exit code."""
        with trio.fail_after(timeout):
            return await self.process.wait()


async def run_hypercorn(
    app: str = "trio_counters:app",
    *,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` with hypercorn's trio worker on 127.0.0.1 until cancelled."""
    command = [
        sys.executable, "-m", "hypercorn",
        "--worker-class", "trio",
        "--bind", "127.0.0.1:0",
        *README_ARGS,
        *args,
        app,
    ]  # fmt: skip
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            lambda task_status: trio.run_process(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                check=False,
                task_status=task_status,
            )
        )
        output = bytearray()
        assert process.stdout is not None
        started = False
        with trio.move_on_after(STARTUP_TIMEOUT):
            async for chunk in process.stdout:
                output += chunk
                match = _RUNNING.search(output)
                if match:
                    started = True
                    break
        if not started:
            process.kill()
            raise RuntimeError(
                f"hypercorn did not start within {STARTUP_TIMEOUT} s "
                f"(exit code {process.returncode}); its output:\n{output.decode(errors='replace')}"
            )
        task_status.started(Server(process, int(match[1]), output))
        async for chunk in process.stdout:  # keep the pipe drained, keep the log
            output += chunk
