"""hypercorn's trio ``worker_serve``, accepting every waiting connection in one turn.

trio's ``serve_listeners`` takes one connection per scheduling round: a successful
``accept`` still yields, and the round that follows runs every connection that is
ready first. Under load those rounds are long, so a burst of new connections waits
for its first answers -- 200 clients connecting at once to a loaded server waited up
to 1.5 s (naive store) and 3.7 s (channel) for the first, while answers on open
connections took 0.2 s at p99 (docs/hardening.md, known issues).

:func:`worker_serve` is hypercorn 0.18.0's, line for line, but for the listeners:
each waits for a connection as trio's does, then takes every other one already
waiting (up to :data:`ACCEPT_BATCH`) before it yields, and starts a connection task
for each. hypercorn builds its listeners and calls ``serve_listeners`` inside
``worker_serve``, so the function is copied rather than wrapped; it serves only with
the fast transport (:func:`trio_counters.transport.run.worker_serve` chooses), and
the pin in :mod:`trio_counters.transport` covers it.
"""

from __future__ import annotations

import errno
import logging
import os
import socket as stdlib_socket
from functools import partial
from random import randint
from typing import Any, NoReturn

import trio

from .hypercorn_internals import run_module

__all__ = ["ACCEPT_BATCH", "worker_serve"]

#: The most connections one listener takes in one turn after the one it waited for.
ACCEPT_BATCH = 256

# As trio.serve_listeners: the accept errors that say the process or the system is
# out of something for now, and how long to wait before trying again.
_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_CAPACITY_SLEEP = 0.100
_log = logging.getLogger("trio.serve_listeners")


async def worker_serve(
    app: Any,
    config: Any,
    *,
    sockets: Any = None,
    shutdown_trigger: Any = None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """hypercorn's ``worker_serve``, with :func:`serve_listeners` for its TCP listeners."""
    hypercorn = run_module
    config.set_statsd_logger_class(hypercorn.StatsdLogger)

    lifespan_state: dict[str, Any] = {}
    lifespan = hypercorn.Lifespan(app, config, lifespan_state)
    max_requests = None
    if config.max_requests is not None:
        max_requests = config.max_requests + randint(0, config.max_requests_jitter)
    context = hypercorn.WorkerContext(max_requests)

    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()

        async with trio.open_nursery() as server_nursery:
            if sockets is None:
                sockets = config.create_sockets()
                for sock in sockets.secure_sockets:
                    sock.listen(config.backlog)
                for sock in sockets.insecure_sockets:
                    sock.listen(config.backlog)

            ssl_context = config.create_ssl_context()
            # Each listener, with its listening socket if it is plain TCP.
            listeners: list[tuple[Any, stdlib_socket.socket | None]] = []
            binds = []
            for sock in sockets.secure_sockets:
                listeners.append(
                    (
                        trio.SSLListener(
                            trio.SocketListener(trio.socket.from_stdlib_socket(sock)),
                            ssl_context,
                            https_compatible=True,
                        ),
                        None,
                    )
                )
                bind = hypercorn.repr_socket_addr(sock.family, sock.getsockname())
                binds.append(f"https://{bind}")
                await config.log.info(f"Running on https://{bind} (CTRL + C to quit)")

            for sock in sockets.insecure_sockets:
                listeners.append((trio.SocketListener(trio.socket.from_stdlib_socket(sock)), sock))
                bind = hypercorn.repr_socket_addr(sock.family, sock.getsockname())
                binds.append(f"http://{bind}")
                await config.log.info(f"Running on http://{bind} (CTRL + C to quit)")

            for sock in sockets.quic_sockets:
                await server_nursery.start(
                    hypercorn.UDPServer(
                        app, config, context, hypercorn.ConnectionState(lifespan_state.copy()), sock
                    ).run
                )
                bind = hypercorn.repr_socket_addr(sock.family, sock.getsockname())
                await config.log.info(f"Running on https://{bind} (QUIC) (CTRL + C to quit)")

            task_status.started(binds)
            try:
                async with trio.open_nursery(strict_exception_groups=True) as nursery:
                    if shutdown_trigger is not None:
                        nursery.start_soon(hypercorn.raise_shutdown, shutdown_trigger)
                    nursery.start_soon(hypercorn.raise_shutdown, context.terminate.wait)

                    nursery.start_soon(
                        partial(
                            serve_listeners,
                            partial(
                                hypercorn.TCPServer,
                                app,
                                config,
                                context,
                                hypercorn.ConnectionState(lifespan_state.copy()),
                            ),
                            listeners,
                            handler_nursery=server_nursery,
                        ),
                    )

                    await trio.sleep_forever()
            except BaseExceptionGroup as error:
                _, other_errors = error.split((hypercorn.ShutdownError, KeyboardInterrupt))
                if other_errors is not None:
                    raise other_errors
            finally:
                await context.terminated.set()
                server_nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout

        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()


async def serve_listeners(
    handler: Any, listeners: list[tuple[Any, stdlib_socket.socket | None]], *, handler_nursery: trio.Nursery
) -> NoReturn:
    """``trio.serve_listeners``, but a plain TCP listener (given with its listening
    socket) takes every connection already waiting in one turn."""
    async with trio.open_nursery() as nursery:
        for listener, listening in listeners:
            nursery.start_soon(_serve_one_listener, listener, listening, handler_nursery, handler)
    raise AssertionError("the listeners never stop")  # pragma: no cover


async def _serve_one_listener(
    listener: Any, listening: stdlib_socket.socket | None, handler_nursery: trio.Nursery, handler: Any
) -> NoReturn:
    async with listener:
        while True:
            try:
                stream = await listener.accept()  # waits, and yields, as trio's does
            except OSError as error:
                await _capacity_error(error)
                continue
            handler_nursery.start_soon(_run_handler, stream, handler)
            if listening is not None:
                for stream in waiting_connections(listening):
                    handler_nursery.start_soon(_run_handler, stream, handler)


def waiting_connections(listening: stdlib_socket.socket) -> list[trio.SocketStream]:
    """The connections already waiting on ``listening`` (non-blocking, as trio set it),
    taken without a yield and set up as ``trio.SocketListener.accept`` sets each one
    up; at most :data:`ACCEPT_BATCH`. Any error ends the batch (most often: none is
    waiting); the next ``listener.accept()`` meets it as trio's does."""
    streams = []
    for _ in range(ACCEPT_BATCH):
        try:
            sock, _ = listening.accept()
        except OSError:
            break
        streams.append(trio.SocketStream(trio.socket.from_stdlib_socket(sock)))
    return streams


async def _capacity_error(error: OSError) -> None:
    if error.errno not in _CAPACITY_ERRNOS:
        raise error
    _log.error(
        "accept returned %s (%s); retrying in %s seconds",
        errno.errorcode[error.errno],
        os.strerror(error.errno),
        _CAPACITY_SLEEP,
        exc_info=True,
    )
    await trio.sleep(_CAPACITY_SLEEP)


async def _run_handler(stream: Any, handler: Any) -> None:
    # As trio's: the handler's stream is closed whatever the handler did.
    try:
        await handler(stream)
    finally:
        await trio.aclose_forcefully(stream)
