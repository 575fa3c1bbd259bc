"""Python's cyclic garbage collector while the app serves: startup frozen, generation 0 larger.

Under load the collector's generation 0 fills every 700 net allocations, and with
hundreds of requests in flight most young objects are still alive when it runs:
each collection walks them, promotes them, and the full collections that follow
walk the whole heap. While an app serves with a ``gc_threshold`` of N (not 0):

* everything built before serving (modules, the app, the store and its table) is
  moved to the permanent generation with :func:`gc.freeze`, so no collection
  walks it again;
* :func:`gc.set_threshold` ``(N, 10, 10)``: generation 0 is collected every N net
  allocations instead of 700, by when most of a request's objects have been freed
  by reference counting; the older generations keep Python's ratios, so a full
  collection still comes every 100 young ones and memory stays flat (with 20 and
  100 the soak's RSS crept up between rare full collections).

When the last serving app stops, the thresholds Python had are put back and the
frozen objects unfrozen. The collector's state belongs to the process, so the
first app to start serving sets it and the last to stop restores it. Figures:
docs/framework.md.
"""

from __future__ import annotations

import gc

__all__ = ["OLDER_THRESHOLDS", "serving_started", "serving_stopped"]

#: Generations 1 and 2's thresholds while tuned: Python's own.
OLDER_THRESHOLDS = (10, 10)

_serving = 0
_saved: tuple[int, int, int] | None = None


def serving_started(threshold: int) -> None:
    """An app starts serving with ``gc_threshold`` ``threshold`` (0: leave the collector be)."""
    global _serving, _saved
    if threshold == 0:
        return
    _serving += 1
    if _serving == 1:
        _saved = gc.get_threshold()
        gc.freeze()
        gc.set_threshold(threshold, *OLDER_THRESHOLDS)


def serving_stopped(threshold: int) -> None:
    """An app started with ``threshold`` has stopped serving."""
    global _serving, _saved
    if threshold == 0 or _serving == 0:
        return
    _serving -= 1
    if _serving == 0 and _saved is not None:
        gc.set_threshold(*_saved)
        gc.unfreeze()
        _saved = None
