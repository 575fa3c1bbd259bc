"""``python -m trio_counters.race``: n increments of one counter, traced step by step.

- :mod:`.recorder` the store's tracer and a trio instrument, writing one list of events
- :mod:`.run`      one race through a real store (``make_store``, ``serve``, ``close``)
- :mod:`.timeline` from events to a grid of cells and a verdict (who erased whom)
- :mod:`.terminal` the grid as terminal text; :mod:`.svg` as an SVG picture

docs/race-trace.md shows the three traces and explains them.
"""

from __future__ import annotations

from .recorder import KINDS, Event, Recorder, Step
from .run import Race, run_race
from .timeline import Timeline

__all__ = ["KINDS", "Event", "Race", "Recorder", "Step", "Timeline", "run_race"]
