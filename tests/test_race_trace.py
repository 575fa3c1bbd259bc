"""``python -m trio_counters.race``: the recorded traces, their verdicts, and the command.

The races run in-process through :func:`run_race` (the same store code the server
runs); the command's outputs (``--json``, ``--svg``, piped text) run as a subprocess.
Trio may reverse the order of a batch at random, so nothing here depends on the
order of tasks within a batch, only on what the events say.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import trio

from trio_counters.race import Race, Recorder, Timeline, run_race
from trio_counters.race.__main__ import use_colour
from trio_counters.race.run import MANAGER
from trio_counters.stores import StoreStatistics

STRATEGIES = ["naive", "lock", "channel"]
SVG = "{http://www.w3.org/2000/svg}"


def _of(race: Race, kind: str) -> list:
    return [e for e in race.events if e.kind == kind]


async def test_naive_three_every_read_before_the_first_write() -> None:
    race = await run_race("naive", 3)
    reads, writes = _of(race, "read"), _of(race, "write")
    assert [e.value for e in reads] == [0, 0, 0]
    assert max(e.step for e in reads) < min(e.step for e in writes)
    assert {e.batch for e in reads} == {1} and {e.batch for e in writes} == {2}
    assert (race.final, race.expected, race.lost) == (1, 3, 2)
    timeline = Timeline(race)
    assert timeline.store_lost == 2
    # The store's own count of each write's damage matches the erasures derived
    # from the events: the first write erases nothing, each later one erases one.
    assert [w.overwrote for w in timeline.writes] == [len(w.erased) for w in timeline.writes]
    assert [len(w.erased) for w in timeline.writes] == [0, 1, 1]
    assert [w.erased for w in timeline.writes[1:]] == [(w.task,) for w in timeline.writes[:-1]]


async def test_lock_critical_sections_never_overlap() -> None:
    race = await run_race("lock", 5)
    held = {e.task: e.step for e in _of(race, "lock.acquired")}
    freed = {e.task: e.step for e in _of(race, "lock.released")}
    sections = sorted((held[task], freed[task]) for task in race.tasks)
    for (_, end), (start, _) in zip(sections, sections[1:]):
        assert end < start
    # Every read and write falls inside its own task's section.
    for e in _of(race, "read") + _of(race, "write"):
        assert held[e.task] <= e.step <= freed[e.task]
    assert [e.value for e in _of(race, "read")] == [0, 1, 2, 3, 4]
    assert race.final == 5 and race.lost == 0


async def test_channel_manager_applies_every_command_in_one_turn() -> None:
    race = await run_race("channel", 5)
    applies = _of(race, "apply")
    assert {e.task for e in applies} == {MANAGER}
    assert len({e.step for e in applies}) == 1  # one step: one turn
    sent = sorted(e.detail["command"] for e in _of(race, "send"))
    assert sorted(e.detail["command"] for e in applies) == sent  # each once
    assert Timeline(race).summary()[-1].endswith("commands applied per turn: 5")
    assert race.final == 5 and race.lost == 0


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_no_task_steps_twice_in_one_batch(strategy: str) -> None:
    # What makes after_io_wait a batch boundary: trio steps each task of a pass once.
    race = await run_race(strategy, 6)
    seen = [(step.task, step.batch) for step in race.steps]
    assert len(seen) == len(set(seen))
    assert [step.step for step in race.steps] == list(range(1, len(race.steps) + 1))


def _verdict(race: Race) -> tuple:
    t = Timeline(race)
    return race.final, race.lost, t.store_lost, t.batches, [len(w.erased) for w in t.writes]


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_the_same_n_gives_the_same_verdict_every_run(strategy: str) -> None:
    verdicts = [_verdict(await run_race(strategy, 4)) for _ in range(6)]
    assert all(v == verdicts[0] for v in verdicts)
    assert verdicts[0][:2] == ((1, 3) if strategy == "naive" else (4, 0))


@pytest.mark.parametrize("n", [1, 3, 50])
@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_tracing_changes_nothing_it_records(strategy: str, n: int) -> None:
    untraced = await run_race(strategy, n, traced=False)
    traced = await run_race(strategy, n)
    assert untraced.events == () and traced.events
    assert (traced.final, traced.lost) == (untraced.final, untraced.lost)
    assert traced.statistics == untraced.statistics


async def test_large_n_is_summarised() -> None:
    naive, channel = await run_race("naive", 200), await run_race("channel", 200)
    assert "reads saw: 0 ×200" in Timeline(naive).summary()
    assert Timeline(channel).summary()[-1].endswith("commands applied per turn: 200")
    assert "0..199 ×1 each" in Timeline(await run_race("lock", 200)).summary()[1]


async def test_a_new_store_kind_is_recorded_and_drawn_as_it_comes() -> None:
    # A durable store would add kinds like these; neither recorder nor grid changes.
    recorder = Recorder(["committer"])

    async def committer() -> None:
        recorder("commit.started", "c", 7, batch_of=3)
        await trio.sleep(0)
        recorder("commit.done", "c")

    trio.lowlevel.add_instrument(recorder)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(committer, name="committer")
    finally:
        trio.lowlevel.remove_instrument(recorder)
    assert [(e.kind, e.batch, e.detail) for e in recorder.events] == [
        ("commit.started", 1, {"batch_of": 3}),
        ("commit.done", 2, {}),
    ]
    stats = StoreStatistics(strategy="durable", counters=1, max_counters=1)
    steps, events = tuple(recorder.steps), tuple(recorder.events)
    race = Race("durable", 1, ("committer",), 1, stats, steps, events)
    cells = Timeline(race).rows["committer"]
    drawn = [[line.text for line in c.lines] for c in cells]
    assert drawn == [["commit.started 7 batch_of=3"], ["commit.done"]]


# -- the command ----------------------------------------------------------------


def _command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trio_counters.race", *args],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip


def test_json_round_trips_and_svg_draws_the_same_rows(tmp_path: Path) -> None:
    svg_file = tmp_path / "race.svg"
    data = json.loads(_command("-n", "3", "--json", "--svg", str(svg_file)).stdout)
    races = {race["strategy"]: race for race in data["races"]}
    assert list(races) == STRATEGIES and data["n"] == 3
    verdicts = [(r["final"], r["expected"], r["lost"]) for r in races.values()]
    assert verdicts == [(1, 3, 2), (3, 3, 0), (3, 3, 0)]
    assert races["naive"]["store_lost"] == 2
    for race in races.values():
        assert set(race["timeline"]) == set(race["tasks"])
        for event in race["events"]:
            assert {"task", "batch", "step", "kind", "name", "value"} <= set(event)

    root = ET.parse(svg_file).getroot()
    assert root.tag == f"{SVG}svg"
    panels = root.findall(f"{SVG}g[@class='race']")
    assert [p.get("data-strategy") for p in panels] == STRATEGIES
    for panel in panels:
        race = races[panel.get("data-strategy")]
        rows = panel.findall(f"{SVG}g[@class='row']")
        assert [row.get("data-task") for row in rows] == race["tasks"]
        for row in rows:
            assert row.find(f"{SVG}text[@class='label']").text == row.get("data-task")
            cells = row.findall(f"{SVG}g[@class='cell']")
            drawn = [[text.text for text in cell.iter(f"{SVG}text")] for cell in cells]
            assert drawn == [cell["lines"] for cell in race["timeline"][row.get("data-task")]]
        verdict = [t.text for t in panel.findall(f"{SVG}text[@class='verdict']")]
        assert verdict == race["verdict"]


def test_piped_output_has_no_ansi_codes() -> None:
    out = _command().stdout
    assert "\x1b" not in out
    assert "final 1, expected 4: 3 updates lost" in out
    assert "\x1b[" in _command("--color", "always").stdout


def test_colour_only_on_a_terminal_without_no_color() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert use_colour("auto", Tty(), {})
    assert not use_colour("auto", Tty(), {"NO_COLOR": "1"})
    assert not use_colour("auto", io.StringIO(), {})
    assert use_colour("always", io.StringIO(), {"NO_COLOR": "1"})
    assert not use_colour("never", Tty(), {})


def test_help_explains_the_columns() -> None:
    out = _command("--help").stdout
    assert "scheduling batches" in out and "--svg" in out and "--json" in out
