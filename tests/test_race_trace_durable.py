"""``python -m trio_counters.race --durable``: the same races with real commits in the
checkpoint's place. The verdicts do not change; the commits show who pays for what.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trio_counters.race import Timeline, run_race
from trio_counters.race.run import MANAGER


@pytest.mark.parametrize("strategy", ["naive", "lock", "channel"])
async def test_durable_races_keep_their_verdicts_and_show_each_commit(strategy: str, tmp_path: Path) -> None:
    n = 5
    race = await run_race(strategy, n, database=str(tmp_path / "race.db"))
    commits = [e for e in race.events if e.kind == "commit"]
    assert not [e for e in race.events if e.kind == "checkpoint"]  # the commit took its place
    stats = race.statistics.database
    assert stats is not None and stats.writes == n
    if strategy == "channel":
        # One turn, one transaction, n writes in one row; the answers come after it.
        [commit] = commits
        assert (commit.task, commit.detail) == (MANAGER, {"writes": n, "rows": 1})
        [committed] = [e for e in race.events if e.kind == "committed"]
        replies = [e for e in race.events if e.kind == "reply"]
        assert len(replies) == n and all(committed.step < e.step for e in replies)
        assert stats.commits == 1
    else:
        # One transaction per increment; naive's all commit 1, lock's 1..n in order.
        assert len(commits) == n == stats.commits
        expected = [1] * n if strategy == "naive" else list(range(1, n + 1))
        assert [e.value for e in commits] == expected
    lost = n - 1 if strategy == "naive" else 0
    assert (race.final, race.lost) == (n - lost, lost)
    timeline = Timeline(race)
    assert timeline.title == f"{strategy} + database: {n} increments of one counter, started together"
    if strategy == "naive":
        assert timeline.store_lost == n - 1  # still counted exactly, through real I/O


def test_the_command_runs_each_strategy_on_a_temporary_file_it_removes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trio_counters.race", "--durable", "-n", "3", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    data = json.loads(result.stdout)
    races = {race["strategy"]: race for race in data["races"]}
    assert set(races) == {"naive", "lock", "channel"}
    for race in races.values():
        assert race["database"].endswith(f"{race['strategy']}.db")
        assert not os.path.exists(race["database"])  # deleted with its folder
    assert [race["final"] for race in data["races"]] == [1, 3, 3]
    manager = races["channel"]["timeline"]["manager"]
    lines = [line for cell in manager for line in cell["lines"]]
    assert "commits 3 writes (1 row)" in lines and "committed" in lines
