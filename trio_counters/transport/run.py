"""hypercorn's trio ``worker_serve``, with SIGTERM and Ctrl-C handled when hypercorn serves
in its own process (``--workers 0``).

Why ``--workers 0``: with worker processes, hypercorn's parent reports 0 even when its
worker died (``hypercorn/run.py`` overwrites the worker's exit code), so a crash looks
like a clean exit. Serving in its own process, hypercorn exits non-zero when serving
fails -- but nothing then turns SIGTERM into a graceful shutdown: its default action
kills the process at once, and a Ctrl-C is a ``KeyboardInterrupt`` that a second one
breaks. :func:`worker_serve` closes that gap: there, the first SIGINT or SIGTERM
starts hypercorn's graceful shutdown (bounded by ``--graceful-timeout``), and any
later one is ignored. A signal that comes while the app is still starting (its store
connecting, say) ends the start at once: hypercorn itself would only look at its
shutdown trigger once it serves. An app that refuses to start (a database file it
cannot use) ends the process with status 1 and one line, not hypercorn's traceback.
Why and how: docs/transport.md.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import trio

from .hypercorn_internals import IMPORT_ERROR, LifespanFailureError, run_module
from .tcp_server import FastTCPServer
from .worker import worker_serve as batched_worker_serve

__all__ = ["SHUTDOWN_SIGNALS", "stock_worker_serve", "worker_serve"]

#: The signals that start the graceful shutdown, as hypercorn's parent takes them.
SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)

#: hypercorn's own, which :func:`worker_serve` calls.
stock_worker_serve: Any = None if IMPORT_ERROR is not None else run_module.worker_serve


async def worker_serve(
    app: Any,
    config: Any,
    *,
    sockets: Any = None,
    shutdown_trigger: Any = None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """hypercorn's ``worker_serve`` (with the fast transport, a copy that accepts in
    batches); when it is the process's whole ``trio.run`` and has no shutdown trigger
    (``--workers 0``), the first SIGINT or SIGTERM triggers it."""
    if shutdown_trigger is not None or not _serves_the_process():
        await _hypercorns_or_batched()(
            app, config, sockets=sockets, shutdown_trigger=shutdown_trigger, task_status=task_status
        )
        return
    try:
        await _serve_the_process(app, config, sockets, task_status)
    except* LifespanFailureError:
        # The app refused to start, and said why in the log already (the store's
        # one line, or Quart's traceback): one more line, and no traceback of
        # hypercorn's, which would only repeat it.
        await config.log.critical("trio_counters: the app did not start (the reason is above); exiting")
        raise SystemExit(1) from None


def _hypercorns_or_batched() -> Any:
    """hypercorn's own ``worker_serve``, or, with the fast transport, the copy that
    accepts every waiting connection in one turn (:mod:`.worker`)."""
    return batched_worker_serve if run_module.TCPServer is FastTCPServer else stock_worker_serve


async def _serve_the_process(app: Any, config: Any, sockets: Any, task_status: Any) -> None:
    signalled = trio.Event()
    serving = _NoteStarted(task_status)
    with _set_on_signal(signalled):
        async with trio.open_nursery() as nursery:

            async def end_a_start_on_signal() -> None:
                await signalled.wait()
                if not serving.done:  # still starting: nothing to shut down gracefully yet
                    nursery.cancel_scope.cancel()

            nursery.start_soon(end_a_start_on_signal)
            await _hypercorns_or_batched()(
                app, config, sockets=sockets, shutdown_trigger=signalled.wait, task_status=serving
            )
            nursery.cancel_scope.cancel()


class _NoteStarted:
    """A task status that notes when hypercorn reports it serves, and passes it on."""

    def __init__(self, task_status: Any) -> None:
        self.task_status = task_status
        self.done = False

    def started(self, value: Any = None) -> None:
        self.done = True
        self.task_status.started(value)


def _serves_the_process() -> bool:
    """Whether the calling task is ``trio.run``'s main task, in the main thread: hypercorn's
    ``trio_worker`` with ``--workers 0``, not a test that serves inside its own trio.run."""
    if threading.current_thread() is not threading.main_thread():
        return False
    nursery = trio.lowlevel.current_task().parent_nursery
    return nursery is not None and nursery.parent_task is trio.lowlevel.current_root_task()


@contextmanager
def _set_on_signal(event: trio.Event) -> Iterator[None]:
    """Set ``event`` on each :data:`SHUTDOWN_SIGNALS` signal, and nothing else.

    A plain handler rather than ``trio.open_signal_receiver``, which, when it closes,
    delivers the signals it did not hand out to the previous handler: a second Ctrl-C
    during shutdown would then raise ``KeyboardInterrupt`` at the very end. Once a
    signal has come the process is on its way out, so both signals are then ignored
    (``SIG_IGN``) for the rest of its life: a Python handler would not do, since the
    interpreter puts back the default action of every signal with a Python handler
    as it exits, and a second SIGTERM or Ctrl-C in that window killed the process by
    the signal (exit status 143 or 130) after a clean shutdown. Otherwise (serving
    ended without a signal: a crash, ``--max-requests``) the previous handlers are
    put back.
    """
    token = trio.lowlevel.current_trio_token()

    def handler(signum: int, frame: Any) -> None:
        for number in SHUTDOWN_SIGNALS:
            signal.signal(number, signal.SIG_IGN)
        try:
            token.run_sync_soon(event.set, idempotent=True)  # signal-safe, as trio's own
        except trio.RunFinishedError:
            pass

    previous = {number: signal.signal(number, handler) for number in SHUTDOWN_SIGNALS}
    try:
        yield
    finally:
        if not event.is_set():
            for number, action in previous.items():
                signal.signal(number, action)
