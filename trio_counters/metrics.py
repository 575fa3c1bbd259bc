"""What the server lets you see: requests by endpoint and status, and the store's state.

One source of truth, two views. :class:`RequestRecorder` counts every answered
request and times it (fed by the app's ASGI middleware, :mod:`trio_counters.gate`);
the store reports its own state through ``statistics()``. ``/stats`` shows both as JSON; ``/metrics`` renders the same
numbers in the Prometheus text format through ``prometheus-client``: a collector
reads them at scrape time, so nothing is counted twice.
"""

from __future__ import annotations

import collections
import dataclasses
import http
from collections.abc import Iterator
from typing import Any

import trio
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector

from .stores import CounterStore, DatabaseStatistics, StoreStatistics

__all__ = ["ENDPOINTS", "RequestRecorder", "StoreCollector", "stats_document"]

#: Paths that get a label of their own; every other path is counted as ``other``,
#: so random URLs cannot grow the metrics without bound.
ENDPOINTS = ("/get", "/set", "/inc", "/stats", "/metrics")

_ENDPOINT_SET = frozenset(ENDPOINTS)
_LABELS = (*ENDPOINTS, "other")

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class RequestRecorder:
    """Counts each HTTP request by endpoint and status, and times it; the app's
    :class:`~trio_counters.gate.Gate` calls :meth:`record` once per request.

    A request that ends before it is answered (the client left, the server shut
    down) is counted with the status ``cancelled``. Recording allocates nothing the
    garbage collector tracks: each ``(endpoint, status)`` key is made once and kept.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        #: Requests per ``(endpoint, status)``, in the order each pair was first seen;
        #: the status is a string (``"200"``, ``"cancelled"``).
        self.answered: collections.Counter[tuple[str, str]] = collections.Counter()
        self._latency = Histogram(
            "trio_counters_request_duration_seconds",
            "Time from the request reaching the app to the end of its answer, by endpoint.",
            ["endpoint"],
            registry=registry,
            buckets=_LATENCY_BUCKETS,
        )
        # One child per endpoint, looked up once: labels() validates and locks on every call.
        self._observe = {endpoint: self._latency.labels(endpoint).observe for endpoint in _LABELS}
        self._keys: dict[str, dict[int | None, tuple[str, str]]] = {endpoint: {} for endpoint in _LABELS}

    def record(self, path: str, status: int | None, seconds: float) -> None:
        """One request to ``path`` (the ASGI scope's), answered with ``status`` (None:
        ended unanswered) after ``seconds``."""
        endpoint = path if path in _ENDPOINT_SET else "other"
        keys = self._keys[endpoint]
        key = keys.get(status)
        if key is None:
            key = keys[status] = (endpoint, "cancelled" if status is None else str(status))
        self.answered[key] += 1
        self._observe[endpoint](seconds)

    def served(self) -> dict[str, int]:
        """Successful (2xx) requests per endpoint."""
        served: collections.Counter[str] = collections.Counter()
        for (endpoint, status), count in self.answered.items():
            if status.startswith("2"):
                served[endpoint] += count
        return dict(served)

    def refused(self) -> dict[str, int]:
        """Unsuccessful requests per reason: the status' name, like ``not_found``."""
        refused: collections.Counter[str] = collections.Counter()
        for (_, status), count in self.answered.items():
            if not status.startswith("2"):
                refused[_reason(status)] += count
        return dict(refused)


def _reason(status: str) -> str:
    if status == "cancelled":
        return status
    try:
        return http.HTTPStatus(int(status)).name.lower()
    except ValueError:
        return status


def _limiter_fields(limiter: trio.CapacityLimiter | None) -> dict[str, int] | None:
    if limiter is None:
        return None
    stats = limiter.statistics()
    return {
        "borrowed": stats.borrowed_tokens,
        "total": int(stats.total_tokens),
        "waiting": stats.tasks_waiting,
    }


def _guard_fields(stats: StoreStatistics) -> dict[str, dict[str, int | bool]]:
    """The guard's statistics under its name, like ``{"lock": {"locked": ...}}``; empty without one."""
    if stats.guard is None:
        return {}
    return {stats.guard.name: dataclasses.asdict(stats.guard)}


def stats_document(
    store: CounterStore, recorder: RequestRecorder, inc_limiter: trio.CapacityLimiter | None
) -> dict[str, Any]:
    """The ``/stats`` JSON: field names are documented in the README."""
    stats = store.statistics()
    document: dict[str, Any] = {
        "strategy": stats.strategy,
        "counters": stats.counters,
        "max_counters": stats.max_counters,
        "requests": {"served": recorder.served(), "refused": recorder.refused()},
        **_guard_fields(stats),
        "inc_limiter": _limiter_fields(inc_limiter),
        "race": None,
    }
    if stats.race is not None:
        document["race"] = {
            "lost_updates": stats.race.lost_updates,
            "overwritten_sets": stats.race.overwritten_sets,
            "worst": dict(stats.race.worst),
        }
    if stats.database is not None:  # only when a database is configured
        document["database"] = _database_fields(stats.database)
    return document


def _database_fields(database: DatabaseStatistics) -> dict[str, Any]:
    """The statistics as they are, plus the two averages a reader wants first."""
    fields: dict[str, Any] = dataclasses.asdict(database)
    commits = database.commits
    fields["writes_per_commit"] = round(database.writes / commits, 2) if commits else None
    fields["mean_commit_seconds"] = database.commit_seconds / commits if commits else None
    return fields


class StoreCollector(Collector):
    """Reads the request counts and the store's statistics at each scrape."""

    def __init__(
        self,
        store: CounterStore,
        recorder: RequestRecorder,
        inc_limiter: trio.CapacityLimiter | None,
    ) -> None:
        self.store = store
        self.recorder = recorder
        self.inc_limiter = inc_limiter

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "trio_counters_requests",
            "HTTP requests answered, by endpoint and status (cancelled: ended unanswered).",
            labels=["endpoint", "status"],
        )
        for (endpoint, status), count in sorted(self.recorder.answered.items()):
            requests.add_metric([endpoint, status], count)
        yield requests

        stats = self.store.statistics()
        yield _gauge("counters", "Counters in the store.", stats.counters, stats.strategy)
        yield _gauge("max_counters", "Most counters the store will hold.", stats.max_counters, stats.strategy)
        for guard, fields in _guard_fields(stats).items():
            for field, value in fields.items():
                yield _gauge(
                    f"{guard}_{field}", f"trio statistics of the store's {guard}: {field}.", value, stats.strategy
                )
        for field, value in (_limiter_fields(self.inc_limiter) or {}).items():
            yield _gauge(f"inc_limiter_{field}", f"The /inc CapacityLimiter: {field} tokens or tasks.", value, stats.strategy)
        if stats.race is not None:
            yield _gauge(
                "lost_updates",
                "Increments acknowledged but overwritten by the naive store's race, since each counter's last set.",
                stats.race.lost_updates,
                stats.strategy,
            )
            overwritten = CounterMetricFamily(
                "trio_counters_overwritten_sets",
                "Sets that a racing increment overwrote (naive store).",
                labels=["strategy"],
            )
            overwritten.add_metric([stats.strategy], stats.race.overwritten_sets)
            yield overwritten
        if stats.database is not None:
            yield from _database_metrics(stats.database, stats.strategy)


def _database_metrics(database: DatabaseStatistics, strategy: str) -> Iterator[Metric]:
    info = GaugeMetricFamily(
        "trio_counters_database_open",
        "1 while the database file is open; its path and synchronous mode as labels.",
        labels=["strategy", "file", "synchronous"],
    )
    info.add_metric([strategy, database.file, database.synchronous], float(database.open))
    yield info
    commits = SummaryMetricFamily(
        "trio_counters_database_commit_seconds",
        "Transactions committed for /set and /inc, and the seconds they took (fsync included).",
        labels=["strategy"],
    )
    commits.add_metric([strategy], count_value=database.commits, sum_value=database.commit_seconds)
    yield commits
    for name, documentation, value in (
        ("database_writes", "Sets and increments committed; over commits, the batch size.", database.writes),
        ("database_failed_commits", "Commits that failed (their requests got 503, nothing changed).", database.failed_commits),
    ):
        counter = CounterMetricFamily(f"trio_counters_{name}", documentation, labels=["strategy"])
        counter.add_metric([strategy], value)
        yield counter
    yield _gauge("database_largest_commit", "Most writes one transaction carried.", database.largest_commit, strategy)
    yield _gauge("database_max_commit_seconds", "The longest commit, in seconds.", database.max_commit_seconds, strategy)
    yield _gauge("database_tasks_waiting", "Tasks waiting for the database connection.", database.tasks_waiting, strategy)
    yield _gauge("database_loaded", "Counters loaded from the file at start.", database.loaded, strategy)
    yield _gauge("database_load_seconds", "Seconds the file took to open and load.", database.load_seconds, strategy)


def _gauge(name: str, documentation: str, value: float, strategy: str) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(f"trio_counters_{name}", documentation, labels=["strategy"])
    gauge.add_metric([strategy], float(value))
    return gauge
