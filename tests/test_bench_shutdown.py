"""``python -m benchmarks.shutdown``: a short real run of two of its cases."""

from __future__ import annotations

import pytest

from benchmarks import shutdown


def test_the_shutdown_benchmark_times_each_case_on_each_transport(capsys: pytest.CaptureFixture[str]) -> None:
    assert shutdown.main(["--runs", "1", "--held", "20", "--cases", "held-http1", "flood"]) == 0
    out = capsys.readouterr().out
    for transport in shutdown.TRANSPORTS:
        for case in ("held-http1", "flood"):
            assert f"{transport:5} {case:10} exit 0 after" in out
            assert f"{transport:5} {case:10} median" in out
    assert "held-h2" not in out
