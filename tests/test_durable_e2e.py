"""The database end to end: the real server restarted, killed with -9 under load, started
twice on one file; and, through the HTTP layer, /stats, /metrics and a full disk.
"""

from __future__ import annotations

import collections
import json
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import h11
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from test_durable_file import _refused, snapshot
from test_durable_stores import _limit_pages, file_counts, memory_counts
from trio_counters import create_app
from trio_counters.config import IN_PROCESS_STRATEGIES
from trio_counters.testing import TRANSPORT_ERRORS, Connection, Server, request, value_of
from trio_counters.testing.checks import assert_no_tracebacks

StartServer = Callable[..., Awaitable[Server]]

#: Only guards against a hang.
HANG = 60


class Load:
    """Keep-alive clients incrementing ``i`` until their server goes away.

    ``acknowledged`` counts the 200s; ``in_doubt`` the requests sent (or being sent)
    that got no answer: each may or may not have counted.
    """

    def __init__(self, port: int, *, until: int) -> None:
        self.port = port
        self.acknowledged = 0
        self.in_doubt = 0
        self.statuses: collections.Counter[int] = collections.Counter()
        self.reached = trio.Event()
        self._until = until

    async def client(self) -> None:
        while True:
            try:
                connection = await Connection.open(self.port)
            except OSError:
                return  # the server is gone
            async with connection:
                # hypercorn closes a connection after 1000 requests (keep_alive_max_requests).
                while connection.h11.our_state is not h11.MUST_CLOSE:
                    self.in_doubt += 1
                    try:
                        reply = await connection.request("/inc?name=i")
                    except (*TRANSPORT_ERRORS, ConnectionError):
                        return  # this one stays in doubt
                    self.in_doubt -= 1
                    self.statuses[reply.status] += 1
                    if reply.status == 200:
                        self.acknowledged += 1
                        if self.acknowledged >= self._until:
                            self.reached.set()


def _env(path: Path) -> dict[str, str]:
    return {"TRIO_COUNTERS_DATABASE": str(path)}


async def _counts(port: int, *names: str) -> dict[str, int | None]:
    return {name: await value_of(port, name) for name in names}


@pytest.mark.parametrize("strategy", IN_PROCESS_STRATEGIES)
async def test_sigterm_under_load_then_restart_keeps_every_count(
    strategy: str, tmp_path: Path, start_server: StartServer
) -> None:
    path = tmp_path / "counters.db"
    server = await start_server(strategy, env=_env(path))
    assert (await request(server.port, "/set?name=x&val=41")).status == 200
    load = Load(server.port, until=500)
    with trio.fail_after(HANG):
        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(load.client)
            await load.reached.wait()
            server.send_signal(signal.SIGTERM)  # the clients end as their connections close
            assert await server.wait(HANG) == 0, server.log
    assert set(load.statuses) <= {200, 503}, load.statuses
    assert_no_tracebacks(server)
    assert not os.path.exists(f"{path}-wal")  # closed cleanly: SQLite checkpointed and removed it

    again = await start_server(strategy, env=_env(path))
    counts = await _counts(again.port, "i", "j", "x")
    low = 1 if strategy == "naive" else load.acknowledged  # naive loses updates, on purpose
    assert low <= counts["i"] <= load.acknowledged + load.in_doubt, (counts, load.acknowledged, load.in_doubt)
    assert (counts["j"], counts["x"]) == (0, 41)  # i and j are never reset

    # Quiet now: whatever /get shows is what the next start loads, for naive too.
    for target in ("/inc?name=x", "/inc?name=j", "/set?name=new&val=-5"):
        assert (await request(again.port, target)).status == 200
    shown = await _counts(again.port, "i", "j", "x", "new")
    again.send_signal(signal.SIGTERM)
    assert await again.wait(HANG) == 0
    third = await start_server(strategy, env=_env(path))
    assert await _counts(third.port, "i", "j", "x", "new") == shown == {**shown, "j": 1, "x": 42, "new": -5}


@pytest.mark.parametrize("strategy", IN_PROCESS_STRATEGIES)
async def test_kill_9_under_load_loses_no_acknowledged_increment(
    strategy: str, tmp_path: Path, start_server: StartServer
) -> None:
    path = tmp_path / "counters.db"
    server = await start_server(strategy, env=_env(path))
    load = Load(server.port, until=1500)
    with trio.fail_after(HANG):
        async with trio.open_nursery() as nursery:
            for _ in range(200):
                nursery.start_soon(load.client)
            await load.reached.wait()
            os.kill(server.worker, signal.SIGKILL)  # no shutdown, no close: the WAL stays
    assert await server.wait(HANG) == -signal.SIGKILL
    assert set(load.statuses) == {200}, load.statuses
    assert load.in_doubt > 0  # the kill did land mid-load

    again = await start_server(strategy, env=_env(path))  # SQLite recovers the WAL
    final = await value_of(again.port, "i")
    assert final is not None
    if strategy == "naive":
        # Each naive write commits the value it then shows, so the file holds the last
        # value committed: at least one increment, at most one per request sent.
        assert 1 <= final <= load.acknowledged + load.in_doubt
    else:
        # Every acknowledged increment was committed first; those in doubt may have been.
        assert load.acknowledged <= final <= load.acknowledged + load.in_doubt, (
            final, load.acknowledged, load.in_doubt,
        )  # fmt: skip
    print(f"{strategy}: {load.acknowledged} acknowledged, {load.in_doubt} in doubt, {final} after the restart")


async def test_a_second_server_on_the_same_file_is_refused_and_changes_nothing(
    tmp_path: Path, start_server: StartServer, nursery: trio.Nursery
) -> None:
    path = tmp_path / "counters.db"
    first = await start_server("channel", env=_env(path))
    assert (await request(first.port, "/set?name=x&val=7")).status == 200
    before = file_counts(str(path))
    with trio.fail_after(HANG):
        code, log = await _refused(nursery, {**_env(path), "TRIO_COUNTERS_STORE": "lock"})
    assert code != 0, log
    [line] = [line for line in log.splitlines() if "ERROR in sqlite" in line]
    assert line.endswith(
        f"cannot use the database {path}: another process is using it (a second server, or a "
        "second hypercorn worker with -w 2): one process owns a database file; for more than "
        "one process, use the redis store (docs/redis.md)"
    )
    assert file_counts(str(path)) == before
    assert await value_of(first.port, "x") == 7  # the first server serves on
    assert (await request(first.port, "/inc?name=x")).status == 200
    assert file_counts(str(path))["x"] == 8


async def test_two_workers_on_one_file_are_refused_and_change_nothing(
    tmp_path: Path, start_server: StartServer, nursery: trio.Nursery
) -> None:
    path = tmp_path / "counters.db"
    server = await start_server("lock", env=_env(path))
    assert (await request(server.port, "/set?name=x&val=7")).status == 200
    server.send_signal(signal.SIGTERM)
    assert await server.wait(HANG) == 0
    before, counts = snapshot(tmp_path), file_counts(str(path))
    with trio.fail_after(HANG):
        code, log = await _refused(nursery, _env(path), "--workers", "2")
    assert "another process is using it (a second server, or a second hypercorn worker with -w 2)" in log
    # The refused worker ends the whole server: hypercorn's parent stops the other one
    # and exits (with 0: it reports 0 whatever its workers did, see testing/server.py).
    assert code is not None
    assert file_counts(str(path)) == counts
    # The worker that did open the file was stopped by hypercorn's parent, perhaps
    # before closing it: SQLite's -wal and -shm may be left, the file itself is as it was.
    assert {k: v for k, v in snapshot(tmp_path).items() if k == path.name} == {path.name: before[path.name]}


@pytest.mark.parametrize("strategy", IN_PROCESS_STRATEGIES)
async def test_stats_and_metrics_show_the_database(strategy: str, tmp_path: Path) -> None:
    path = tmp_path / "counters.db"
    app = create_app(store=strategy, database=str(path), database_sync="normal")
    async with app.test_app():
        client = app.test_client()
        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(client.get, "/inc?name=i")
        stats = json.loads(await (await client.get("/stats")).get_data(as_text=True))
        text = await (await client.get("/metrics")).get_data(as_text=True)
        store = app.extensions["trio_counters"].store
        async with store._database._turn:
            connection = store._database._open.connection
            assert connection.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
            assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    database = stats["database"]
    assert (database["file"], database["synchronous"], database["open"]) == (str(path), "normal", True)
    assert (database["loaded"], database["failed_commits"], database["last_failure"]) == (2, 0, None)
    assert database["writes"] == 20 and database["commits"] >= 1
    assert database["writes_per_commit"] == round(20 / database["commits"], 2)
    assert database["mean_commit_seconds"] > 0 and database["tasks_waiting"] == 0
    if strategy != "channel":
        assert database["commits"] == 20 and database["largest_commit"] == 1
    samples = {s.name: s for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples["trio_counters_database_commit_seconds_count"].value == database["commits"]
    assert samples["trio_counters_database_writes_total"].value == 20
    assert samples["trio_counters_database_failed_commits_total"].value == 0
    assert samples["trio_counters_database_open"].labels == {
        "strategy": strategy, "file": str(path), "synchronous": "normal",
    }  # fmt: skip
    # Without a database, /stats has no database key: its other keys are unchanged.
    plain = create_app(store=strategy)
    async with plain.test_app():
        plain_stats = json.loads(await (await plain.test_client().get("/stats")).get_data(as_text=True))
    assert set(stats) - set(plain_stats) == {"database"}


@pytest.mark.parametrize("strategy", IN_PROCESS_STRATEGIES)
async def test_a_full_disk_answers_503_with_the_reason_and_service_resumes(strategy: str, tmp_path: Path) -> None:
    path = tmp_path / "counters.db"
    app = create_app(store=strategy, database=str(path))
    async with app.test_app():
        client = app.test_client()
        store = app.extensions["trio_counters"].store
        assert (await client.get("/inc?name=i")).status_code == 200
        await _limit_pages(store._database, 0)
        refused = None
        for k in range(100):
            response = await client.get(f"/set?name={'n' * 200}{k}&val={k}")
            if response.status_code != 200:
                refused = (k, response)
                break
        assert refused is not None
        k, response = refused
        body = await response.get_data(as_text=True)
        assert response.status_code == 503 and response.headers["Retry-After"] == "1"
        assert f"the database {path} could not commit (database or disk is full)" in body
        assert (await client.get(f"/get?name={'n' * 200}{k}")).status_code == 404
        assert memory_counts(store) == file_counts(str(path))  # every 200 kept, nothing else
        assert (await client.get("/inc?name=i")).status_code == 200  # a row changed in place
        await _limit_pages(store._database, None)
        assert (await client.get(f"/set?name={'n' * 200}{k}&val={k}")).status_code == 200
        assert memory_counts(store) == file_counts(str(path))
        assert file_counts(str(path))["i"] == 2
