"""The worker's graceful shutdown deadline, in process: the writes it shields are cut
there and no later, and from then on the objects alive are left out of collections
(the held requests' unwinding allocates, and full collections walking every live task
cost 0.6 s of the 1.5 s past the deadline with 1,000 of them: benchmarks.shutdown)."""

from __future__ import annotations

import gc
from types import SimpleNamespace

import trio

from trio_counters.transport.worker_context import ShutdownDeadline


class Context:
    """hypercorn's worker context, as far as ShutdownDeadline looks at it."""

    def __init__(self) -> None:
        self.terminated = trio.Event()


async def test_a_shielded_write_runs_until_the_deadline_and_no_longer() -> None:
    context = Context()
    deadline = ShutdownDeadline.of(context, SimpleNamespace(graceful_timeout=0.2))
    with deadline.shield() as shield:
        start = trio.current_time()
        context.terminated.set()
        await trio.sleep(5)  # a write that never ends
    assert shield.cancelled_caught
    assert 0.2 <= trio.current_time() - start < 1.0


def test_objects_alive_at_the_deadline_are_frozen_out_of_collections_until_the_run_ends() -> None:
    frozen = []

    async def worker() -> None:
        context = Context()
        ShutdownDeadline.of(context, SimpleNamespace(graceful_timeout=0.1))
        frozen.append(gc.get_freeze_count())
        context.terminated.set()
        await trio.sleep(0.05)
        frozen.append(gc.get_freeze_count())  # shutdown has begun, but requests may still end
        await trio.sleep(0.2)
        frozen.append(gc.get_freeze_count())

    assert gc.get_freeze_count() == 0
    trio.run(worker)
    assert frozen[0] == frozen[1] == 0 and frozen[2] > 0
    assert gc.get_freeze_count() == 0
