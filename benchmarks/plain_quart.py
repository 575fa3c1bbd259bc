"""The baseline a user would write by hand: a plain QuartTrio counter, no guard.

``hypercorn --worker-class trio benchmarks.plain_quart:app`` serves it, from the
repository root. ``benchmarks.throughput`` measures trio_counters against it: the same
``/inc?name=N`` request, answered by a dict update and ``return "ok"`` -- no
input checks, no store, no lock, no error mapping, no close fix. (It does not
race: there is no ``await`` between its read and its write, so trio runs the
update whole. As a speed baseline it is the floor of what a QuartTrio handler
costs.)
"""

from __future__ import annotations

from quart import request
from quart_trio import QuartTrio

app = QuartTrio(__name__)
counters: dict[str, int] = {"i": 0, "j": 0}


@app.route("/inc")
async def inc() -> str:
    name = request.args["name"]
    counters[name] = counters.get(name, 0) + 1
    return "ok"


@app.route("/get")
async def get() -> str:
    name = request.args["name"]
    return f"{name}: {counters[name]}"
