"""How the server process ends, under the README's command (``--workers 0``: hypercorn
serves in its own process): a crash is a non-zero exit, a graceful shutdown exit 0.

With worker processes, hypercorn's parent exits 0 whatever its worker did
(``hypercorn/run.py`` overwrites the worker's exit code), so a worker that died -- and
every count with it -- looked like a clean stop. Serving in its own process, a crash
ends ``trio.run`` with the exception and the exit code says so; and SIGTERM and
Ctrl-C, which hypercorn handles only in a parent, are handled by
``trio_counters.transport.run``: the first starts the graceful shutdown, a second
neither hurries nor breaks it.

The crashes are deliberate, in small app modules written here (no hook in the
package): one that fails in lifespan startup, one whose worker dies while serving.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import pytest
import trio

from trio_counters.testing import README_ARGS, Raw, Server, ServerError, form_post_bytes, get_bytes, run_server
from trio_counters.testing.server import server_command

StartServer = Callable[..., Awaitable[Server]]

#: A bound on any one wait for the server; a pass never comes near it.
PATIENCE = 15.0
#: How much past ``--graceful-timeout`` a shutdown may take.
PROMPT = 1.0

FAILS_TO_START = """
from trio_counters import create_app

app = create_app()


@app.before_serving
async def fail() -> None:
    raise RuntimeError("deliberate failure in lifespan startup")
"""

DIES_WHILE_SERVING = """
import trio
from trio_counters import create_app

inner = create_app()


async def _die() -> None:
    raise RuntimeError("deliberate failure while serving")


async def app(scope, receive, send):
    # A task of the worker's own (not a connection's) that fails: trio.run ends.
    if scope["type"] == "http" and scope["path"] == "/die":
        trio.lowlevel.spawn_system_task(_die)
    await inner(scope, receive, send)
"""


async def exit_code(tmp_path: Path, source: str, then: Callable[[Server], Awaitable[None]]) -> tuple[int, str]:
    """Serve the app module ``source`` under the README's command, do ``then`` once it
    listens, and wait for it to exit by itself: its exit code and log."""
    (tmp_path / "deliberate.py").write_text(source)
    async with trio.open_nursery() as nursery:
        try:
            server = await nursery.start(partial(run_server, "deliberate:app", cwd=tmp_path))
        except ServerError as error:  # it died before it said where it listens
            assert error.returncode is not None
            return error.returncode, "\n".join(error.log_tail)
        await then(server)
        return await server.wait(PATIENCE), server.log


async def test_the_readme_command_serves_in_hypercorns_own_process(start_server: StartServer) -> None:
    assert README_ARGS[:2] == ("--workers", "0")
    server = await start_server()
    assert server.worker == server.process.pid


async def test_a_failure_in_lifespan_startup_exits_non_zero(tmp_path: Path) -> None:
    async def nothing(server: Server) -> None:
        pass

    with trio.fail_after(2 * PATIENCE):
        code, log = await exit_code(tmp_path, FAILS_TO_START, nothing)
    assert code != 0, log
    assert "deliberate failure in lifespan startup" in log


async def test_a_worker_that_dies_while_serving_exits_non_zero(tmp_path: Path) -> None:
    async def kill(server: Server) -> None:
        async with await Raw.connect(server.port) as raw:
            await raw.send(get_bytes("/die"))
            await raw.closed()  # answered or not, the process is going

    with trio.fail_after(2 * PATIENCE):
        code, log = await exit_code(tmp_path, DIES_WHILE_SERVING, kill)
    assert code != 0, log
    assert "deliberate failure while serving" in log


@pytest.mark.parametrize(
    ("first", "second", "to_group"),
    [
        (signal.SIGTERM, signal.SIGTERM, False),
        (signal.SIGINT, signal.SIGINT, True),  # a terminal's Ctrl-C, twice
        (signal.SIGINT, signal.SIGTERM, False),
    ],
    ids=["SIGTERM twice", "Ctrl-C twice", "SIGINT then SIGTERM"],
)
async def test_signals_shut_down_gracefully_once_and_exit_0(
    start_server: StartServer, transport_kind: str, first: int, second: int, to_group: bool
) -> None:
    graceful = 2.0
    server = await start_server(
        None, "--graceful-timeout", f"{graceful:g}", env={"TRIO_COUNTERS_TRANSPORT": transport_kind}
    )

    def signal_it(number: int) -> None:
        if to_group:
            os.killpg(server.process.pid, number)
        else:
            server.send_signal(number)

    with trio.fail_after(graceful + PATIENCE):
        async with await Raw.connect(server.port) as stuck, await Raw.connect(server.port) as idle:
            await stuck.send(form_post_bytes("/inc", b"name=i", length=50))  # its body never ends
            await idle.send(get_bytes("/get?name=i"))
            assert (await idle.response()).status == 200
            signalled = trio.current_time()
            signal_it(first)
            assert await idle.closed() == b""  # closed as the shutdown began
            signal_it(second)  # during the shutdown: changes nothing
            code = await server.wait(graceful + PATIENCE)
            took = trio.current_time() - signalled
            assert await stuck.closed() == b""
    assert code == 0, server.log
    # The request in flight held the shutdown to its graceful timeout, and no longer.
    assert graceful - 0.1 <= took <= graceful + PROMPT, f"exited after {took:.2f} s"
    assert server.tracebacks() == [], server.log


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_more_signals_at_any_moment_of_a_quick_shutdown_still_exit_0(
    start_server: StartServer, number: int
) -> None:
    """An idle server shuts down at once; signals keep coming every few milliseconds
    until it has exited, so one lands at every stage, the interpreter's exit included
    (where Python puts back the default action of a signal with a Python handler: the
    process used to die by the second signal, exit status 143 or 130)."""
    server = await start_server(None)
    async with await Raw.connect(server.port) as client:
        await client.send(get_bytes("/inc?name=i"))
        assert (await client.response()).status == 200
    server.send_signal(number)
    with trio.fail_after(PATIENCE):
        while server.process.poll() is None:
            try:
                server.send_signal(number)
            except ProcessLookupError:
                break
            await trio.sleep(0.003)
        code = await server.wait(PATIENCE)
    assert code == 0, server.log


async def test_sigterm_while_the_store_is_still_connecting_ends_the_start_at_once(nursery: trio.Nursery) -> None:
    """The redis store's start waits up to ``redis_timeout`` for a Redis that accepted the
    connection and never answers; hypercorn looks at its shutdown trigger only once it
    serves, so without our worker_serve SIGTERM would wait all of that out."""
    redis_timeout = 20.0
    accepted = trio.Event()
    silent: list[trio.SocketStream] = []

    async def accept_and_say_nothing(stream: trio.SocketStream) -> None:
        silent.append(stream)
        accepted.set()
        await trio.sleep_forever()

    (listener,) = await nursery.start(partial(trio.serve_tcp, accept_and_say_nothing, 0, host="127.0.0.1"))
    port = listener.socket.getsockname()[1]
    env = {
        **os.environ,
        "TRIO_COUNTERS_STORE": "redis",
        "TRIO_COUNTERS_REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "TRIO_COUNTERS_REDIS_TIMEOUT": f"{redis_timeout:g}",
        "TRIO_COUNTERS_STORE_TIMEOUT": "60",
    }
    process = await trio.lowlevel.open_process(
        server_command(), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    try:
        with trio.fail_after(PATIENCE):
            await accepted.wait()  # the store is connecting: the app is starting
        process.send_signal(signal.SIGTERM)
        signalled = trio.current_time()
        with trio.fail_after(PATIENCE):
            code = await process.wait()
        took = trio.current_time() - signalled
        assert process.stdout is not None
        log = (await process.stdout.receive_some(1 << 20)).decode(errors="replace")
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert took < PROMPT + 1, f"exited {took:.2f} s after SIGTERM, not at once:\n{log}"
    assert code == 0, log
    assert "Running on" not in log
