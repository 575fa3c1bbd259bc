"""bench.py's parts, and the benchmarks that print figures.

bench.py at the repository root is the command; these modules keep it short and
let the tests import each part on its own: the load client (client.py), the
statistics and output (stats.py), what each strategy name serves
(strategies.py). Servers are started by :mod:`trio_counters.testing`, the
harness the tests use too.

Each benchmark runs from the repository root as a module, e.g.
``.venv/bin/python -m benchmarks.throughput --help``: throughput (our transport
against hypercorn's, with wrk), framework (the per-request tax of Quart and our
layer, on each request pipeline), vs_wrk (bench.py's client against wrk),
correctness_cost (lock and channel against naive), durable (what keeping the
counts in an SQLite file costs each strategy), soak (a bounded soak with
misbehaving clients), memory (RSS per counter). wrk.py runs wrk for them;
bare_asgi.py and plain_quart.py are the reference apps hypercorn serves, through
reference.py, which installs trio_counters' transport (and pipeline) first.
"""
