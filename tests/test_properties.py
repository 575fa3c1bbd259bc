"""Property-based tests: random operations against a model dict, for every strategy.

The model is a plain dict with the service's rules (int64 values, refusal of a missing
name, of an increment past 2**63-1 and of a new name past ``max_counters``). Each
property runs twice: straight against the store objects, and through the HTTP layer
with Quart's test client, where invalid requests (missing or empty names, values that
are not int64, a parameter given twice) are generated too and must be refused with 400
and change nothing.

Sequentially, every outcome and the final table must equal the model's, for every
strategy. Concurrently -- a batch of operations started together in one nursery -- the
model cannot say in which order the operations land, so the batch is made of
operations whose *final* state does not depend on the order, and the properties assert
exactly what the model can predict:

- k increments of a name at value v: exactly ``min(k, 2**63-1 - v)`` succeed, the rest
  are refused as overflow, and the counter ends at ``v`` plus the successes; on a
  missing name all k are refused and the name stays missing;
- sets on names with no concurrent increment: an existing name ends at one of the
  values set there; of the new names, exactly ``min(new names, room left)`` are
  created, each either wholly created (all its sets succeed) or wholly refused;
- a get sees a value between the counter's before and after, or a set's value;
- nothing else changes.

The safe strategies (the conftest's ``safe_strategy``: ``lock``, ``channel`` and, with a
Redis from the conftest, ``redis``) must meet all of it. ``naive`` meets the sequential
model, and under k increments of one name started together it ends at exactly
``initial + 1``: trio's race is deterministic.

Each hypothesis example runs in its own ``trio.run`` (pytest-trio wraps the inner test),
so every example gets a fresh store or app, its lifespan (the channel manager) running;
the ``wipe`` fixture (conftest.py) empties a shared store's table (Redis) before each
example. The conftest's hypothesis profile drops the per-example deadline.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import pytest
import trio
from hypothesis import event, given, settings
from hypothesis import strategies as st

from trio_counters import create_app
from trio_counters.config import INITIAL_COUNTERS
from trio_counters.errors import CounterNotFound, CounterOverflow, StoreError, TooManyCounters
from trio_counters.stores import INT64_MAX, INT64_MIN, CounterStore
from trio_counters.testing.checks import one_error

# ---------------------------------------------------------------------------------
# Operations and outcomes
# ---------------------------------------------------------------------------------

#: Counter names: the initial ones, plain new ones, and ones that need escaping in a
#: query string or form (``&``, ``=``, ``%``, ``+``, a space, non-ASCII).
NAMES = ("i", "j", "a", "b", "café", "x&y=z", "100%", "+ ")
#: Outcome of a request refused for bad input (HTTP 400); the store never sees it.
BAD_REQUEST = "bad request"
#: The refusal each status stands for, and back.
ERROR_FOR_STATUS: dict[int, Any] = {
    400: BAD_REQUEST,
    404: CounterNotFound,
    409: CounterOverflow,
    507: TooManyCounters,
}


@dataclasses.dataclass(frozen=True)
class Invalid:
    """A ``val`` the HTTP layer must refuse with 400."""

    text: str


@dataclasses.dataclass(frozen=True)
class Op:
    kind: str  # "get", "set" or "inc"
    name: str | None  # None: the HTTP parameter is left out (HTTP only)
    value: int | Invalid | None = None  # for "set"
    #: How an int value is written in the request (HTTP only): "plain", "plus", "zeros".
    style: str = "plain"
    method: str = "GET"  # HTTP only: "POST" is allowed for set and inc
    form: bool = False  # HTTP only: POST parameters in a form body
    #: HTTP only: a parameter sent a second time, ``(key, text)``; always refused (400).
    repeat: tuple[str, str] | None = None


#: What an operation answered: ("ok", value or None) or ("error", refusal).
Outcome = tuple[str, Any]


class Model:
    """The counter service as a dict: what every operation must answer and do."""

    def __init__(self, max_counters: int) -> None:
        self.max_counters = max_counters
        self.values: dict[str, int] = {name: 0 for name in INITIAL_COUNTERS}

    def apply(self, op: Op) -> Outcome:
        if not op.name or isinstance(op.value, Invalid) or op.repeat is not None:
            return ("error", BAD_REQUEST)
        if op.kind == "get":
            if op.name not in self.values:
                return ("error", CounterNotFound)
            return ("ok", self.values[op.name])
        if op.kind == "set":
            if op.name not in self.values and len(self.values) >= self.max_counters:
                return ("error", TooManyCounters)
            assert isinstance(op.value, int)
            self.values[op.name] = op.value
            return ("ok", None)
        assert op.kind == "inc"
        if op.name not in self.values:
            return ("error", CounterNotFound)
        if self.values[op.name] >= INT64_MAX:
            return ("error", CounterOverflow)
        self.values[op.name] += 1
        return ("ok", None)


# ---------------------------------------------------------------------------------
# Two ways to run an operation: the store itself, and HTTP through the test client
# ---------------------------------------------------------------------------------


class StoreLayer:
    def __init__(self, store: CounterStore) -> None:
        self.store = store

    async def run(self, op: Op) -> Outcome:
        assert op.name is not None and not isinstance(op.value, Invalid) and op.repeat is None
        try:
            if op.kind == "get":
                return ("ok", await self.store.get(op.name))
            if op.kind == "set":
                assert isinstance(op.value, int)
                await self.store.set(op.name, op.value)
            else:
                await self.store.inc(op.name)
        except StoreError as error:
            return ("error", type(error))
        return ("ok", None)

    async def state(self) -> dict[str, int]:
        """The table, read through the public interface."""
        return await read_state(self.run, self.store)


class HttpLayer:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.client = app.test_client()
        self.store: CounterStore = app.extensions["trio_counters"].store

    async def run(self, op: Op) -> Outcome:
        params: list[tuple[str, str]] = []
        if op.name is not None:
            params.append(("name", op.name))
        if isinstance(op.value, Invalid):
            params.append(("val", op.value.text))
        elif op.value is not None:
            params.append(("val", format_value(op.value, op.style)))
        if op.repeat is not None:
            params.append(op.repeat)
        encoded = urlencode(params)
        if op.form:
            response = await self.client.open(
                f"/{op.kind}",
                method=op.method,
                data=encoded,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        else:
            response = await self.client.open(f"/{op.kind}?{encoded}", method=op.method)
        body = await response.get_data(as_text=True)
        status = response.status_code
        assert response.content_type == "text/plain; charset=utf-8", (op, status, body)
        assert body.endswith("\n") and body.count("\n") == 1, (op, status, body)
        body = body[:-1]
        if status == 200:
            if op.kind == "get":
                prefix = f"{op.name}: "
                assert body.startswith(prefix), (op, body)
                return ("ok", int(body[len(prefix) :]))
            assert body == "ok", (op, body)
            return ("ok", None)
        assert status in ERROR_FOR_STATUS, (op, status, body)
        if status == 404:
            assert body == f"{op.name} not found", (op, body)
        return ("error", ERROR_FOR_STATUS[status])

    async def state(self) -> dict[str, int]:
        return await read_state(self.run, self.store)


def format_value(value: int, style: str) -> str:
    """An int64 written as the API allows: optional sign, leading zeros."""
    sign = "-" if value < 0 else ("+" if style == "plus" else "")
    digits = str(abs(value))
    if style == "zeros":
        digits = "000" + digits
    return sign + digits


async def read_state(run: Callable[[Op], Awaitable[Outcome]], store: CounterStore) -> dict[str, int]:
    """Every counter the tests can name, and a check that no other one exists."""
    state: dict[str, int] = {}
    for name in NAMES:
        outcome = await run(Op("get", name))
        if outcome[0] == "ok":
            state[name] = outcome[1]
        else:
            assert outcome == ("error", CounterNotFound), (name, outcome)
    assert store.statistics().counters == len(state), (store.statistics(), state)
    return state


@asynccontextmanager
async def layer(kind: str, strategy: str, max_counters: int) -> AsyncIterator[Any]:
    """A fresh store (its ``serve`` running) or a fresh serving app.

    The store comes from ``create_app``, so it is built from the same settings as the
    app's (for ``redis``: the ``TRIO_COUNTERS_REDIS_URL`` the conftest sets).
    """
    app = create_app(store=strategy, max_counters=max_counters)
    async with one_error():
        if kind == "store":
            store = app.extensions["trio_counters"].store
            async with trio.open_nursery() as nursery:
                await nursery.start(store.serve)
                try:
                    yield StoreLayer(store)
                finally:
                    store.close()
        else:
            async with app.test_app():
                yield HttpLayer(app)


# ---------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------

names = st.sampled_from(NAMES)
#: int64 values, crowded at 0 and at both ends of the range.
values = st.one_of(
    st.integers(-3, 3),
    st.integers(INT64_MAX - 3, INT64_MAX),
    st.integers(INT64_MIN, INT64_MIN + 3),
    st.integers(INT64_MIN, INT64_MAX),
)
#: Values the HTTP layer must refuse: just outside int64, or not a base-10 integer.
invalid_values = st.one_of(
    st.integers(INT64_MAX + 1, INT64_MAX + 3).map(str),
    st.integers(INT64_MIN - 3, INT64_MIN - 1).map(str),
    st.sampled_from(["", " 5", "5 ", "1_000", "\u0663", "1e3", "0x10", "1.0", "--1", "+", "-", "five"]),
).map(Invalid)
max_counters = st.integers(len(INITIAL_COUNTERS), len(INITIAL_COUNTERS) + 4)


#: A few names per example, so that operations meet on the same counters.
name_pools = st.lists(names, min_size=1, max_size=4, unique=True)


def store_ops(pool: Sequence[str]) -> st.SearchStrategy[Op]:
    pool_names = st.sampled_from(pool)
    return st.one_of(
        st.builds(Op, st.just("get"), pool_names),
        st.builds(Op, st.just("set"), pool_names, values),
        st.builds(Op, st.just("inc"), pool_names),
    )


@st.composite
def http_ops(draw: st.DrawFn, pool: Sequence[str]) -> Op:
    kind = draw(st.sampled_from(["get", "set", "inc"]))
    pool_names = st.sampled_from(pool)
    name = draw(st.one_of(pool_names, pool_names, pool_names, st.sampled_from([None, ""])))
    value = None
    if kind == "set":
        value = draw(st.one_of(values, values, values, invalid_values))
    method = "GET" if kind == "get" else draw(st.sampled_from(["GET", "POST"]))
    repeat = None
    present = [key for key, given in (("name", name), ("val", value)) if given is not None]
    if present and draw(st.sampled_from([False] * 9 + [True])):
        # A key already given, again, with the same text or another: refused, not guessed at.
        repeat = (draw(st.sampled_from(present)), draw(st.one_of(names, values.map(str))))
    return Op(
        kind,
        name,
        value,
        style=draw(st.sampled_from(["plain", "plus", "zeros"])),
        method=method,
        form=method == "POST" and draw(st.booleans()),
        repeat=repeat,
    )


@dataclasses.dataclass(frozen=True)
class Batch:
    """Operations to start together; see the module docstring for what they promise."""

    incs: dict[str, int]  # name -> how many increments
    sets: dict[str, list[int]]  # name (never one in incs) -> the values set there
    gets: list[str]
    ops: list[Op]  # all of the above, in the order they are started


@st.composite
def batches(draw: st.DrawFn, http: bool = False) -> Batch:
    incs = draw(st.dictionaries(names, st.integers(1, 8), max_size=4))
    free = [name for name in NAMES if name not in incs]
    sets = draw(
        st.dictionaries(st.sampled_from(free), st.lists(values, min_size=1, max_size=3), max_size=3)
    )
    gets = draw(st.lists(names, max_size=4))

    def variant(op: Op) -> Op:
        if not http or op.kind == "get":
            return op
        method = draw(st.sampled_from(["GET", "POST"]))
        form = method == "POST" and draw(st.booleans())
        return dataclasses.replace(op, method=method, form=form)

    ops = [variant(Op("inc", name)) for name, count in incs.items() for _ in range(count)]
    ops += [variant(Op("set", name, value)) for name, vals in sets.items() for value in vals]
    ops += [Op("get", name) for name in gets]
    return Batch(incs, sets, gets, draw(st.permutations(ops)))


# ---------------------------------------------------------------------------------
# Running and checking
# ---------------------------------------------------------------------------------


async def run_sequentially(target: Any, model: Model, ops: Sequence[Op]) -> None:
    for step, op in enumerate(ops):
        expected = model.apply(op)
        event(f"sequential {op.kind}: {getattr(expected[1], '__name__', expected[0])}")
        assert await target.run(op) == expected, (step, op)
    assert await target.state() == model.values


async def run_together(target: Any, ops: Sequence[Op]) -> list[Outcome]:
    """Start every operation in the same scheduling batch; their outcomes, in order."""
    outcomes: list[Outcome | None] = [None] * len(ops)

    async def run_one(index: int, op: Op) -> None:
        outcomes[index] = await target.run(op)

    async with trio.open_nursery() as nursery:
        for index, op in enumerate(ops):
            nursery.start_soon(run_one, index, op)
    return outcomes  # type: ignore[return-value]


def check_batch(batch: Batch, before: dict[str, int], after: dict[str, int], max_counters: int,
                outcomes: list[Outcome]) -> None:  # fmt: skip
    """Assert what the model predicts for a batch started together (module docstring)."""
    by_name: dict[tuple[str, str | None], list[Outcome]] = {}
    for op, outcome in zip(batch.ops, outcomes):
        by_name.setdefault((op.kind, op.name), []).append(outcome)

    for name, count in batch.incs.items():
        results = by_name[("inc", name)]
        if name not in before:
            assert results == [("error", CounterNotFound)] * count, (name, results)
            assert name not in after
            continue
        applied = min(count, INT64_MAX - before[name])
        if applied < count:
            event("batch: some increments refused as overflow")
        assert sorted(results, key=repr) == sorted(
            [("ok", None)] * applied + [("error", CounterOverflow)] * (count - applied), key=repr
        ), (name, before[name], results)
        assert after.get(name) == before[name] + applied, (name, before[name], count)

    new_names = [name for name in batch.sets if name not in before]
    created = [name for name in new_names if name in after]
    if len(created) < len(new_names):
        event("batch: new names refused at the counter limit")
    if len(created) and len(created) < len(new_names):
        event("batch: some new names created, some refused")
    assert len(created) == min(len(new_names), max_counters - len(before)), (
        new_names, created, before,
    )  # fmt: skip
    for name, vals in batch.sets.items():
        results = by_name[("set", name)]
        if name in after:
            assert results == [("ok", None)] * len(vals), (name, results)
            assert after[name] in vals, (name, vals, after[name])
        else:
            assert results == [("error", TooManyCounters)] * len(vals), (name, results)

    touched = set(batch.incs) | set(batch.sets)
    assert {n: v for n, v in after.items() if n not in touched} == {
        n: v for n, v in before.items() if n not in touched
    }

    for name in batch.gets:
        for result in by_name[("get", name)]:
            if name in batch.incs:
                if name not in before:
                    assert result == ("error", CounterNotFound)
                else:
                    assert result[0] == "ok" and before[name] <= result[1] <= after[name], (
                        name, result, before[name], after[name],
                    )  # fmt: skip
            elif name in batch.sets:
                possible = [("ok", v) for v in batch.sets[name]]
                possible.append(("ok", before[name]) if name in before else ("error", CounterNotFound))
                assert result in possible, (name, result, possible)
            else:
                expected = ("ok", before[name]) if name in before else ("error", CounterNotFound)
                assert result == expected, (name, result)


# ---------------------------------------------------------------------------------
# The properties
# ---------------------------------------------------------------------------------


def ops_for(kind: str, pool: Sequence[str]) -> st.SearchStrategy[Op]:
    return http_ops(pool) if kind == "http" else store_ops(pool)


#: Counters set just below the overflow, or near 0, before a batch of increments.
presets = st.dictionaries(
    names, st.one_of(st.integers(INT64_MAX - 8, INT64_MAX), st.integers(-3, 3)), max_size=4
)


@pytest.mark.parametrize("kind", ["store", "http"])
@settings(max_examples=50)
@given(data=st.data(), limit=max_counters, pool=name_pools)
async def test_sequential_operations_match_the_model(
    strategy: str, kind: str, wipe: Callable[[], None], data: st.DataObject, limit: int,
    pool: list[str],
) -> None:  # fmt: skip
    ops = data.draw(st.lists(ops_for(kind, pool), max_size=30), label="ops")
    model = Model(limit)
    wipe()
    async with layer(kind, strategy, limit) as target:
        await run_sequentially(target, model, ops)


@pytest.mark.parametrize("kind", ["store", "http"])
@settings(max_examples=30)
@given(data=st.data(), limit=max_counters, pool=name_pools)
async def test_operations_started_together_end_where_the_model_says(
    safe_strategy: str, kind: str, wipe: Callable[[], None], data: st.DataObject, limit: int,
    pool: list[str],
) -> None:  # fmt: skip
    model = Model(limit)
    wipe()
    async with layer(kind, safe_strategy, limit) as target:
        for _ in range(data.draw(st.integers(1, 3), label="rounds")):
            preset = [Op("set", name, value) for name, value in data.draw(presets, label="preset").items()]
            ops = data.draw(st.lists(ops_for(kind, pool), max_size=8), label="ops")
            await run_sequentially(target, model, preset + ops)
            batch = data.draw(batches(http=kind == "http"), label="batch")
            before = dict(model.values)
            outcomes = await run_together(target, batch.ops)
            after = await target.state()
            check_batch(batch, before, after, limit, outcomes)
            model.values = after  # the model adopts whichever order the batch landed in


@settings(max_examples=60)
@given(
    data=st.data(),
    limit=max_counters,
    pool=name_pools,
    start=st.one_of(st.integers(-3, 3), st.integers(INT64_MAX - 2, INT64_MAX)),
    count=st.integers(1, 20),
)
async def test_naive_loses_all_but_one_of_increments_started_together(
    data: st.DataObject, limit: int, pool: list[str], start: int, count: int
) -> None:
    name = pool[0]
    model = Model(limit)
    async with layer("store", "naive", limit) as target:
        await run_sequentially(target, model, data.draw(st.lists(store_ops(pool), max_size=10)))
        await run_sequentially(target, model, [Op("set", name, start)])
        before = dict(model.values)
        outcomes = await run_together(target, [Op("inc", name)] * count)
        if name not in before:
            assert outcomes == [("error", CounterNotFound)] * count
        elif before[name] == INT64_MAX:
            assert outcomes == [("error", CounterOverflow)] * count
        else:
            # Every increment read the same value and was acknowledged, but the
            # counter moved by exactly one: count - 1 updates lost, every run.
            assert outcomes == [("ok", None)] * count
            model.values[name] = before[name] + 1
            event("naive: increments lost" if count > 1 else "naive: one increment")
        assert await target.state() == model.values
        # One at a time, it matches the model again.
        await run_sequentially(target, model, data.draw(st.lists(store_ops(pool), max_size=10)))
