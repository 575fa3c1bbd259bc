"""The garbage collector while the app serves: startup frozen, generation 0 larger, and
Python's own thresholds back once the last serving app has stopped."""

from __future__ import annotations

import gc

from trio_counters import create_app
from trio_counters.collector import OLDER_THRESHOLDS

TUNED = 50_000


async def test_serving_tunes_the_collector_and_stopping_restores_it() -> None:
    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    first, second = create_app(store="lock", gc_threshold=TUNED), create_app(store="lock", gc_threshold=1234)
    async with first.test_app():
        assert gc.get_threshold() == (TUNED, *OLDER_THRESHOLDS)
        assert gc.get_freeze_count() > frozen  # what startup built is frozen
        async with second.test_app():  # the first app to serve set it; it stays
            assert gc.get_threshold() == (TUNED, *OLDER_THRESHOLDS)
        assert gc.get_threshold() == (TUNED, *OLDER_THRESHOLDS)  # still serving
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == frozen


async def test_a_threshold_of_zero_the_default_leaves_the_collector_alone() -> None:
    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    app = create_app(store="lock", gc_threshold=0)
    async with app.test_app():
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() == frozen
