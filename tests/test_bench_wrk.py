"""The one wrk runner the benchmarks share: reading wrk's report (no wrk needed)."""

from __future__ import annotations

import pytest

from benchmarks import wrk

CLEAN = """\
Running 1s test @ http://127.0.0.1:45937/inc?name=i
  1 threads and 10 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     6.30ms    1.73ms  23.53ms   83.84%
    Req/Sec     1.60k   210.07     2.05k    70.00%
  1597 requests in 1.00s, 218.34KB read
Requests/sec:   1593.07
Transfer/sec:    217.80KB
"""

TROUBLED = """\
Running 1s test @ http://127.0.0.1:45937/nope
  1 threads and 200 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     7.70ms    7.71ms  49.78ms   92.88%
    Req/Sec     1.59k   339.32     2.01k    70.00%
  1584 requests in 1.00s, 317.11KB read
  Socket errors: connect 0, read 3, write 1, timeout 7
  Non-2xx or 3xx responses: 1584
Requests/sec:   1582.64
Transfer/sec:    316.84KB
"""


def test_a_clean_report_has_its_rate_and_count_and_no_errors() -> None:
    result = wrk.parse(CLEAN)
    assert (result.rate, result.requests) == (1593.07, 1597)
    assert result.errors == 0 and result.trouble == ""


def test_non_2xx_answers_and_socket_errors_are_counted() -> None:
    result = wrk.parse(TROUBLED)
    assert (result.rate, result.requests, result.non_2xx) == (1582.64, 1584, 1584)
    assert result.socket_errors == {"connect": 0, "read": 3, "write": 1, "timeout": 7}
    assert result.errors == 1584 + 11
    assert result.trouble == "1584 non-2xx, 3 socket read, 1 socket write, 7 socket timeout"


@pytest.mark.parametrize("text", ["", "unable to connect to 127.0.0.1:1 Connection refused\n", CLEAN.replace("Requests/sec", "Req")])
def test_a_report_without_the_figures_is_an_error(text: str) -> None:
    with pytest.raises(wrk.WrkError, match="unexpected wrk output"):
        wrk.parse(text)
