"""bench.py's command line: arguments, --help, --plot's dependency; the benchmarks' own.

Every benchmark runs as ``python -m benchmarks.NAME`` from the repository root;
their --help is checked here as a user would run it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

import bench
from benchmarks.strategies import BARE_APP, BARE_LOCK_APP, strategy_server

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ("throughput", "framework", "vs_wrk", "correctness_cost", "soak", "memory")


# --- bench.py's command line -------------------------------------------------------------------


def test_defaults() -> None:
    args = bench.parse_args([])
    assert (args.requests, args.concurrency, args.mode, args.timeout) == (5000, 200, "keepalive", 10.0)
    assert args.strategies == ("naive", "lock", "channel", "bare") and args.url is None


def test_strategies_are_parsed_in_order_without_repeats() -> None:
    assert bench.parse_args(["--strategies", "lock, naive,lock"]).strategies == ("lock", "naive")


@pytest.mark.parametrize(
    "argv",
    [
        ["-n", "0"],
        ["-c", "-3"],
        ["-n", "many"],
        ["--mode", "pipelined"],
        ["--timeout", "0"],
        ["--strategies", "naive,fast"],
        ["--url", "http://192.168.1.1:8000"],
        ["--url", "http://127.0.0.1:8000", "--strategies", "lock"],
        ["--bogus"],
    ],
)
def test_bad_arguments_get_argparse_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        bench.parse_args(argv)
    assert caught.value.code == 2
    assert capsys.readouterr().err.startswith("usage: bench.py")


def test_help_reads_well(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench.parse_args(["--help"])
    text = capsys.readouterr().out
    for phrase in ("keepalive", "The default", "--json", "lost", "--plot", "--url", "reference ceiling"):
        assert phrase in text


def test_plot_without_matplotlib_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    with mock.patch.object(bench.importlib.util, "find_spec", return_value=None):
        assert bench.main(["--plot", "out.png"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "matplotlib" in err and "pip install" in err


# --- what each strategy name serves ------------------------------------------------------


def test_strategy_names_map_to_app_environment_and_workers() -> None:
    assert strategy_server("lock") == ("trio_counters:app", {"TRIO_COUNTERS_STORE": "lock"}, ())
    assert strategy_server("redis-w2") == ("trio_counters:app", {"TRIO_COUNTERS_STORE": "redis"}, ("--workers", "2"))
    assert strategy_server("lock-w2")[2] == ("--workers", "2")
    assert strategy_server("bare") == (BARE_APP, {}, ())
    # The unguarded bare app, on the transport the strategies' servers use (a module
    # path hypercorn imports from the root, which installs TRIO_COUNTERS_TRANSPORT's).
    assert BARE_APP == 'benchmarks.reference:served("bare")'
    assert strategy_server("bare-lock") == (BARE_LOCK_APP, {}, ())


# --- the benchmarks run as modules -------------------------------------------------------


@pytest.mark.parametrize("name", BENCHMARKS)
def test_each_benchmark_runs_as_a_module_and_explains_itself(name: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", "--help"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: python -m benchmarks.{name}")
    assert f".venv/bin/python -m benchmarks.{name}" in done.stdout
