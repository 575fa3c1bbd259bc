"""What the server lets you see: requests by endpoint and status, and the store's state.

One source of truth, two views. :class:`RequestRecorder` (ASGI middleware) counts
every answered request and times it; the store reports its own state through
``statistics()``. ``/stats`` shows both as JSON; ``/metrics`` renders the same
numbers in the Prometheus text format through ``prometheus-client``: a collector
reads them at scrape time, so nothing is counted twice.
"""

from __future__ import annotations

import collections
import dataclasses
import http
import time
from collections.abc import Iterator
from typing import Any

import trio
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .stores import CounterStore, StoreStatistics

__all__ = ["ENDPOINTS", "RequestRecorder", "StoreCollector", "stats_document"]

#: Paths that get a label of their own; every other path is counted as ``other``,
#: so random URLs cannot grow the metrics without bound.
ENDPOINTS = ("/get", "/set", "/inc", "/stats", "/metrics")

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class RequestRecorder:
    """ASGI middleware: count each HTTP request by endpoint and status, and time it.

    A request that ends before it is answered (the client left, the server shut
    down) is counted with the status ``cancelled``.
    """

    def __init__(self, app: Any, registry: CollectorRegistry) -> None:
        self.app = app
        self.answered: collections.Counter[tuple[str, str]] = collections.Counter()
        self._latency = Histogram(
            "trio_counters_request_duration_seconds",
            "Time from the request reaching the app to the end of its answer, by endpoint.",
            ["endpoint"],
            registry=registry,
            buckets=_LATENCY_BUCKETS,
        )
        # One child per endpoint, looked up once: labels() validates and locks on every call.
        self._latency_of = {endpoint: self._latency.labels(endpoint) for endpoint in (*ENDPOINTS, "other")}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        endpoint = path if path in ENDPOINTS else "other"
        status = "cancelled"
        start = time.perf_counter()

        async def send_noting_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = str(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            self.answered[endpoint, status] += 1
            self._latency_of[endpoint].observe(time.perf_counter() - start)

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
    return document


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


def _gauge(name: str, documentation: str, value: float, strategy: str) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(f"trio_counters_{name}", documentation, labels=["strategy"])
    gauge.add_metric([strategy], float(value))
    return gauge
