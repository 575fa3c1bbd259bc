"""bench.py's statistics and output: percentiles, lost updates, the table, the JSON document and the plot."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from unittest import mock

import pytest

import bench
from benchmarks.client import FAILURE_KINDS, LoadStats
from benchmarks.stats import Row, format_table, lost_updates, percentile, summarise, to_json


def no_failures() -> dict[str, int]:
    return dict.fromkeys(FAILURE_KINDS, 0)


# --- statistics -------------------------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0) == 1
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2
    assert percentile([7.0], 99) == 7
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_lost_updates_is_succeeded_minus_the_increase() -> None:
    assert lost_updates(succeeded=5000, initial=0, final=3012) == 1988
    assert lost_updates(succeeded=100, initial=50, final=150) == 0
    assert lost_updates(succeeded=0, initial=0, final=4) == -4
    assert lost_updates(succeeded=10, initial=0, final=None) is None


def make_stats(latencies: list[float], **failures: int) -> LoadStats:
    stats = LoadStats(latencies=latencies, started=10.0, finished=12.0)
    stats.failures.update(failures)
    return stats


def test_summarise_turns_measurements_into_a_row() -> None:
    stats = make_stats([0.001 * v for v in range(1, 101)], status=3, timeout=1)
    row = summarise("lock", stats, planned=104, initial=0, final=100)
    assert (row.requests, row.succeeded, row.failed, row.lost) == (104, 100, 4, 0)
    assert row.req_per_s == pytest.approx(50.0)
    assert row.latencies_ms == pytest.approx({"p50": 50.0, "p99": 99.0, "max": 100.0})


def sample_rows() -> list[Row]:
    naive = summarise("naive", make_stats([0.002] * 1000), planned=1000, initial=0, final=212)
    lock = summarise("lock", make_stats([0.004] * 998, status=2), planned=1000, initial=0, final=998)
    bare = summarise("bare", make_stats([0.001] * 1000), planned=1000, initial=0, final=1000, reference=True)
    return [naive, lock, bare]


def test_table_shows_each_rate_against_naive_only_when_naive_ran() -> None:
    naive, lock, bare = sample_rows()
    lock.elapsed_s *= 2  # half naive's rate
    assert format_table([naive, lock, bare]).splitlines()[3].split()[6] == "0.50"
    without_naive = format_table([lock, bare]).splitlines()
    assert [line.split()[6] for line in without_naive[2:4]] == ["-", "-"]


def test_table_has_one_aligned_line_per_row_and_explains_itself() -> None:
    text = format_table(sample_rows(), note="the note")
    lines = text.splitlines()
    assert lines[0].split() == [
        "strategy", "requests", "failed", "final", "lost", "req/s", "x", "naive", "p50", "ms", "p99", "ms", "max", "ms"
    ]  # fmt: skip
    assert lines[2].split() == ["naive", "1,000", "0", "212", "788", "500", "1.00", "2.0", "2.0", "2.0"]
    assert lines[3].split() == ["lock", "1,000", "2", "998", "0", "499", "1.00", "4.0", "4.0", "4.0"]
    assert lines[4].split()[:7] == ["bare*", "1,000", "0", "1,000", "0", "500", "1.00"]
    assert len({len(line) for line in lines[:5]}) == 1  # columns line up
    assert any(line.startswith("* reference ceiling") for line in lines)
    assert "lock failures: 2 status" in lines
    assert lines[-1] == "the note"


def test_table_warns_when_the_client_may_have_been_the_limit() -> None:
    calm = make_stats([0.001] * 10)
    calm.cpu_s = 0.5  # of a 2 s run
    busy = make_stats([0.001] * 10)
    busy.cpu_s = 1.9
    rows = [summarise(name, stats, planned=10, initial=0, final=10) for name, stats in (("calm", calm), ("busy", busy))]
    warnings = [line for line in format_table(rows).splitlines() if "client was on the CPU" in line]
    assert warnings == [
        "busy: the client was on the CPU 95% of the run, so these figures may be the client's limit,"
        " not the server's (is the machine busy?)"
    ]
    assert to_json(rows, {})["results"][1]["client_cpu_s"] == 1.9


def test_table_marks_interrupted_rows_and_unknown_values() -> None:
    row = summarise("lock", make_stats([]), planned=10, initial=0, final=None, interrupted=True, error="final count unknown: x")
    text = format_table([row])
    assert "lock (stopped)" in text and "lock: final count unknown: x" in text
    assert text.splitlines()[2].split() == ["lock", "(stopped)", "0", "0", "-", "-", "0", "-", "-", "-", "-"]


def test_json_document_has_every_documented_field() -> None:
    args = bench.parse_args(["-n", "1000"])
    document = json.loads(json.dumps(to_json(sample_rows(), bench.config_of(args))))
    assert document["version"] == 1
    assert document["config"] == {
        "mode": "keepalive", "requests": 1000, "concurrency": 200, "timeout_s": 10.0,
        "name": "i", "url": None, "strategies": ["naive", "lock", "channel", "bare"],
    }  # fmt: skip
    naive, lock, bare = document["results"]
    assert naive["lost"] == 788 and naive["failed"] == 0 and naive["reference"] is False
    assert lock["failures"] == {**no_failures(), "status": 2} and lock["requests"] == 1000
    assert bare["reference"] is True and bare["req_per_s"] == 500.0
    assert set(bare["latency_ms"]) == {"p50", "p99", "max"}
    for key in [*document, *document["config"], *naive]:  # --help documents each field
        assert key in bench.EPILOG, key


# --- the plot --------------------------------------------------------------------------


def test_plot_draws_throughput_and_lost_updates(tmp_path: Path) -> None:
    fig, left, right = mock.MagicMock(), mock.MagicMock(), mock.MagicMock()
    pyplot = mock.MagicMock()
    pyplot.subplots.return_value = (fig, (left, right))
    matplotlib = mock.MagicMock(pyplot=pyplot)
    with mock.patch.dict(sys.modules, {"matplotlib": matplotlib, "matplotlib.pyplot": pyplot}):
        bench.plot(sample_rows(), str(tmp_path / "out.png"))
    assert left.bar.call_args.args == (["naive", "lock", "bare*"], [500.0, 499.0, 500.0])
    assert right.bar.call_args.args == (["naive", "lock", "bare*"], [788, 0, 0])
    fig.savefig.assert_called_once_with(str(tmp_path / "out.png"), dpi=100)
