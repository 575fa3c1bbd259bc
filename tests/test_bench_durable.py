"""The durable rows of bench.py and ``python -m benchmarks.durable``: names, files, a
short real run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import bench
from benchmarks import durable
from benchmarks.client import Target, fetch
from benchmarks.strategies import ROOT, serve_strategy, strategy_server


def test_durable_names_map_to_a_store_and_are_accepted_by_bench() -> None:
    assert strategy_server("channel-db") == ("trio_counters:app", {"TRIO_COUNTERS_STORE": "channel"}, ())
    assert bench.DURABLE == ("naive-db", "lock-db", "channel-db")
    args = bench.parse_args(["--strategies", "lock,lock-db"])
    assert args.strategies == ("lock", "lock-db")


async def test_a_durable_server_gets_a_fresh_file_removed_when_it_stops() -> None:
    async with serve_strategy("lock-db") as server:
        status, body = await fetch(Target(server.host, server.port), "/stats")
        database = json.loads(body)["database"]
        assert status == 200 and database["open"] and database["loaded"] == 2
        assert os.path.exists(database["file"])
    assert not os.path.exists(os.path.dirname(database["file"]))


def test_the_durable_benchmark_refuses_what_cannot_run(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        durable.parse_args(["--load", "1"])
    assert "--load must be 0 or at least 2" in capsys.readouterr().err


def test_the_durable_benchmark_prints_its_figures_and_checks_its_counts() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.durable", "-n", "60", "--warmup", "0", "--rounds", "1",
         "-c", "5", "200", "--load", "1000"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("disk (") and "fsync of a 4 KiB write" in out
    assert "channel-db / lock-db = " in out and "(target >= 1.50: " in out
    assert "channel-db / channel = " in out and "(target >= 0.85: " in out
    for server in ("channel-db", "lock-db", "naive-db"):
        assert f"{server}: the file holds i = " in out
    assert "loading 1,000 counters:" in out
