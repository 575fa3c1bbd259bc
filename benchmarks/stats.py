"""bench.py's statistics and output: one :class:`Row` per server, as a table or JSON.

Kept apart from the client so the arithmetic (percentiles, lost updates) can be
tested on plain numbers, and so the table and the JSON are built from the same
row and cannot disagree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from .client import LoadStats

__all__ = ["percentile", "lost_updates", "Row", "summarise", "format_table", "to_json"]

#: Above this share of the run on the CPU, the table warns that the client may be the limit.
CLIENT_BUSY_WARNING = 0.8

#: Bumped when a field of the JSON document changes meaning or goes away.
JSON_VERSION = 1


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """The nearest-rank ``p``-th percentile of already sorted values; None if empty.

    Nearest rank returns a value that was actually measured (no interpolation),
    so ``max`` is ``percentile(v, 100)`` and p99 of 100 samples is the 99th.
    """
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be within [0, 100], got {p}")
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def lost_updates(succeeded: int, initial: int | None, final: int | None) -> int | None:
    """Acknowledged increments that the counter does not show: succeeded - increase.

    None if a count could not be read. Negative means the counter rose by more
    than the successes: requests counted as failed (timeouts, ``unclosed``) had
    been applied, or someone else incremented it meanwhile.
    """
    if initial is None or final is None:
        return None
    return succeeded - (final - initial)


@dataclass
class Row:
    """One line of the table: one server under the workload."""

    strategy: str
    planned: int
    succeeded: int
    failures: dict[str, int]
    initial: int | None
    final: int | None
    elapsed_s: float
    latencies_ms: dict[str, float | None] = field(default_factory=dict)
    reference: bool = False
    interrupted: bool = False
    error: str | None = None
    client_cpu_s: float = 0.0

    @property
    def client_busy(self) -> float | None:
        """The share of the run the client spent on the CPU; near 1, it was the limit."""
        return self.client_cpu_s / self.elapsed_s if self.elapsed_s > 0 else None

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @property
    def requests(self) -> int:
        """Requests that finished, either way (below ``planned`` if interrupted)."""
        return self.succeeded + self.failed

    @property
    def lost(self) -> int | None:
        return lost_updates(self.succeeded, self.initial, self.final)

    @property
    def req_per_s(self) -> float | None:
        """Successful requests per second of wall time."""
        return self.succeeded / self.elapsed_s if self.elapsed_s > 0 else None


def summarise(
    strategy: str,
    stats: LoadStats,
    *,
    planned: int,
    initial: int | None,
    final: int | None,
    reference: bool = False,
    interrupted: bool = False,
    error: str | None = None,
) -> Row:
    """Turn a load run's raw measurements into a :class:`Row`."""
    ordered = sorted(stats.latencies)
    ms = {
        name: None if value is None else value * 1000.0
        for name, value in (
            ("p50", percentile(ordered, 50)),
            ("p99", percentile(ordered, 99)),
            ("max", percentile(ordered, 100)),
        )
    }
    return Row(
        strategy=strategy,
        planned=planned,
        succeeded=stats.succeeded,
        failures=dict(stats.failures),
        initial=initial,
        final=final,
        elapsed_s=stats.elapsed(),
        latencies_ms=ms,
        reference=reference,
        interrupted=interrupted,
        error=error,
        client_cpu_s=stats.cpu_s,
    )


_COLUMNS = ("strategy", "requests", "failed", "final", "lost", "req/s", "x naive", "p50 ms", "p99 ms", "max ms")


def _cell(value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def format_table(rows: Sequence[Row], *, note: str = "") -> str:
    """The human table: one line per row, numbers right-aligned, notes underneath."""
    cells = [list(_COLUMNS)]
    naive = next((row.req_per_s for row in rows if row.strategy == "naive"), None)
    for row in rows:
        # What each guard costs, read off the same run: req/s over the unguarded naive store's.
        relative = row.req_per_s / naive if naive and row.req_per_s is not None else None
        label = row.strategy + ("*" if row.reference else "") + (" (stopped)" if row.interrupted else "")
        lat = row.latencies_ms
        cells.append(
            [
                label,
                _cell(row.requests),
                _cell(row.failed),
                _cell(row.final),
                _cell(row.lost),
                _cell(row.req_per_s),
                _cell(relative, 2),
                _cell(lat.get("p50"), 1),
                _cell(lat.get("p99"), 1),
                _cell(lat.get("max"), 1),
            ]
        )
    widths = [max(len(line[i]) for line in cells) for i in range(len(_COLUMNS))]
    lines = [
        "  ".join(text.ljust(w) if i == 0 else text.rjust(w) for i, (text, w) in enumerate(zip(line, widths)))
        for line in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = []
    if any(row.reference for row in rows):
        notes.append(
            "* reference ceiling: a bare ASGI app (no Quart) on the same hypercorn trio worker and transport,"
            " unguarded: in trio a read and a write with no await between them need no lock"
        )
    if any(row.reference and row.strategy == "bare-lock" for row in rows):
        notes.append("  bare-lock: the same app guarded like lock (read, checkpoint, write under one trio.Lock)")
    for row in rows:
        failed = {kind: n for kind, n in row.failures.items() if n}
        if failed:
            detail = ", ".join(f"{n:,} {kind}" for kind, n in failed.items())
            notes.append(f"{row.strategy} failures: {detail}")
        if row.error:
            notes.append(f"{row.strategy}: {row.error}")
    for row in rows:
        if row.client_busy is not None and row.client_busy > CLIENT_BUSY_WARNING:
            notes.append(
                f"{row.strategy}: the client was on the CPU {row.client_busy:.0%} of the run, so these"
                " figures may be the client's limit, not the server's (is the machine busy?)"
            )
    if any(row.interrupted for row in rows):
        notes.append(
            "(stopped) = cut short by Ctrl-C: measured up to then; requests in flight may have"
            " been applied without being counted, so lost can read below the truth"
        )
    if note:
        notes.append(note)
    return "\n".join(lines + notes)


def to_json(rows: Sequence[Row], config: dict[str, object]) -> dict[str, object]:
    """The machine-readable document; its fields are listed in bench.py's --help epilog."""
    return {
        "version": JSON_VERSION,
        "config": config,
        "results": [
            {
                "strategy": row.strategy,
                "reference": row.reference,
                "planned": row.planned,
                "requests": row.requests,
                "succeeded": row.succeeded,
                "failed": row.failed,
                "failures": row.failures,
                "initial": row.initial,
                "final": row.final,
                "lost": row.lost,
                "elapsed_s": round(row.elapsed_s, 6),
                "req_per_s": None if row.req_per_s is None else round(row.req_per_s, 3),
                "latency_ms": {k: None if v is None else round(v, 3) for k, v in row.latencies_ms.items()},
                "client_cpu_s": round(row.client_cpu_s, 6),
                "interrupted": row.interrupted,
                "error": row.error,
            }
            for row in rows
        ],
    }
