"""A fuzz pass over the HTTP layer, through Quart's test client, for every strategy.

Hypothesis sends random requests: any of seven methods, the real paths and random
ones, query strings built from random keys and values in random encodings (raw text,
percent-encoded bytes including invalid UTF-8, ``+`` for spaces, duplicate keys,
empty and huge values, ``;`` separators) and random bodies (form, multipart, JSON,
garbage, oversized). After every request:

- never a 5xx (but the documented 507 for a new name past ``max_counters``), and the
  app never raises (hypercorn would answer 500);
- the body is one line of ``text/plain; charset=utf-8`` ending in ``\\n`` -- except a
  successful ``/stats`` (one line of JSON) and ``/metrics`` (Prometheus text), each
  checked in its own format; Quart's test client keeps a HEAD response's body (the
  server drops it), so a HEAD body is checked as if it were a GET's;
- a 405 names the allowed methods in ``Allow``;
- a non-2xx answer changes nothing in the table, and a 2xx answer changes at most
  one counter (never removes one), and only for GET, HEAD or POST;
- the table never holds more than ``max_counters`` counters, every value an int64.

At the end of each example ``/stats`` and ``/metrics`` still answer and parse.

This fuzz found, and now guards, two fixes in the app: a query string of raw
bytes that are not UTF-8 (Quart's router used to raise before any handler ran,
a 500) now gets 400, and OPTIONS gets 405 like any other unsupported method
(Quart's automatic OPTIONS answer had an empty body).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, quote_plus

from hypothesis import event, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from trio_counters import create_app
from trio_counters.app import MAX_BODY_BYTES, MAX_QUERY_BYTES
from trio_counters.config import INITIAL_COUNTERS
from trio_counters.stores import INT64_MAX, INT64_MIN
from trio_counters.testing.checks import one_error

METHODS = ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH")
#: Methods that may change a counter (HEAD runs the GET handler).
WRITING_METHODS = ("GET", "HEAD", "POST")
ROUTES = ("/get", "/set", "/inc", "/stats", "/metrics")
TEXT = "text/plain; charset=utf-8"

# ---------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------

#: The real paths, the writing ones twice as often.
real_paths = st.sampled_from(ROUTES + ("/set", "/inc"))
paths = st.one_of(
    real_paths,
    real_paths,
    real_paths,
    st.sampled_from(
        ["/", "*", "//get", "/get/", "/GET", "/inc/x", "/set//", "/./inc", "/../set", "/static/x",
         "/stats/", "/metrics.txt", "/get%00", "/i\u0307nc", "/ｉｎｃ"]
    ),
    st.text(max_size=12).map(lambda text: "/" + text),
)  # fmt: skip

#: Counter names: the initial ones, new ones, and edge cases of the name rules.
names = st.one_of(
    st.sampled_from(["i", "j", "a", "b", "café", "a b", "x&y=z", "100%", "+", "\u2028"]),
    st.sampled_from(["n" * 256, "n" * 257, "a\nb", "\x00", "\x7f", "\x85", "\t", " ", "\ud800"]),
    st.text(max_size=10),
)
#: ``val`` texts: int64 at and past both ends, and the ways a number can be wrong.
vals = st.one_of(
    st.integers(-3, 3).map(str),
    st.integers(INT64_MAX - 2, INT64_MAX + 2).map(str),
    st.integers(INT64_MIN - 2, INT64_MIN + 2).map(str),
    st.sampled_from(
        ["", " 5", "5 ", "1_000", "\u0663", "1e3", "0x10", "1.0", "--1", "+", "-", "-0", "+0",
         "0" * 30 + "7", "9" * 20, "1" * 300, "²", "５", "nan", "inf"]
    ),
    st.text(max_size=10),
)  # fmt: skip
keys = st.one_of(
    st.sampled_from(["name", "val"]),
    st.sampled_from(["name", "val"]),
    st.sampled_from(["NAME", "Name", "name ", " name", "name[]", "val\x00", "", "=", "&", "n%61me"]),
    st.text(max_size=5),
)
values = st.one_of(
    names, names, names, vals, vals, vals, st.sampled_from(["x" * 5000, "x" * (MAX_QUERY_BYTES - 10)])
)


def _percent_all(data: bytes) -> str:
    return "".join(f"%{byte:02X}" for byte in data)


#: How one key or value is written into the query string.
ENCODINGS: dict[str, Callable[[str], str]] = {
    "quote_plus": lambda text: quote_plus(text, safe="", errors="surrogatepass"),
    "quote": lambda text: quote(text, safe="", errors="surrogatepass"),
    "raw": lambda text: text,  # &, =, %, +, # and non-ASCII as they are
    "percent_all": lambda text: _percent_all(text.encode("utf-8", "surrogatepass")),
    "latin-1": lambda text: _percent_all(text.encode("latin-1", "replace")),  # not UTF-8
}


@st.composite
def pairs(draw: st.DrawFn) -> str:
    key = ENCODINGS[draw(st.sampled_from(sorted(ENCODINGS)))](draw(keys))
    value = ENCODINGS[draw(st.sampled_from(sorted(ENCODINGS)))](draw(values))
    shape = draw(st.sampled_from(["key=value"] * 6 + ["key", "=value", "key=", "key==value"]))
    return shape.replace("key", key).replace("value", value)


#: The counters API-shaped requests mostly use: two exist, three can be created.
PLAIN_NAMES = st.sampled_from(["i", "j", "a", "b", "c"])
#: Numbers, mostly valid, crowded at the int64 ends (so that /inc overflows).
API_VALS = st.one_of(
    st.integers(-3, 3).map(str),
    st.integers(INT64_MAX - 2, INT64_MAX).map(str),
    st.integers(INT64_MIN, INT64_MIN + 2).map(str),
    vals,
)


#: True seven times in eight (st.integers(0, 7) would draw 0 far more often).
MOSTLY = st.sampled_from([True] * 7 + [False])


@st.composite
def api_pairs(draw: st.DrawFn) -> list[str]:
    """``name`` and ``val`` as the API expects them, or nearly: often accepted."""
    encode = ENCODINGS[draw(st.sampled_from(["quote_plus", "quote", "percent_all"]))]
    name = draw(st.one_of(PLAIN_NAMES, PLAIN_NAMES, PLAIN_NAMES, names))
    found = ["name=" + encode(name)] if draw(MOSTLY) else []
    if draw(MOSTLY):
        found.append("val=" + encode(draw(API_VALS)))
    if not draw(MOSTLY):
        found.append(draw(pairs()))  # an extra, perhaps repeated, parameter
    return draw(st.permutations(found))


@st.composite
def query_strings(draw: st.DrawFn) -> bytes:
    """A raw query string (the bytes after ``?``)."""
    choice = draw(
        st.sampled_from(["api"] * 4 + ["pairs"] * 4 + ["text", "raw bytes", "escaped bytes", "huge"])
    )
    if choice == "api":
        query = "&".join(draw(api_pairs()))
    elif choice == "pairs":
        separator = draw(st.sampled_from(["&", "&", "&", ";", "&&"]))
        query = separator.join(draw(st.lists(pairs(), max_size=5)))
        if draw(st.booleans()):
            query += draw(st.sampled_from(["&", "#frag", "&=", "%", "%4", "%zz"]))
    elif choice == "text":
        query = draw(st.text(max_size=30))
    elif choice == "raw bytes":
        return draw(st.binary(max_size=20))  # UTF-8 or not
    elif choice == "escaped bytes":
        query = _percent_all(draw(st.binary(max_size=20)))
    else:
        query = "name=i&val=1&pad=" + "x" * draw(st.integers(MAX_QUERY_BYTES - 20, MAX_QUERY_BYTES + 20))
    # A lone surrogate in raw text has no UTF-8 form: sent as the invalid bytes it makes.
    return query.encode("utf-8", "surrogatepass")


@st.composite
def multipart_bodies(draw: st.DrawFn) -> tuple[bytes, str]:
    boundary = draw(st.sampled_from(["b", "----x", "a" * 70]))
    parts = []
    for _ in range(draw(st.integers(0, 3))):
        key = draw(keys).encode("utf-8", "replace")
        value = draw(values).encode("utf-8", "replace")
        parts.append(
            b"--" + boundary.encode() + b'\r\nContent-Disposition: form-data; name="' + key
            + b'"\r\n\r\n' + value + b"\r\n"
        )  # fmt: skip
    body = b"".join(parts) + b"--" + boundary.encode() + b"--\r\n"
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(body)))
        body = body[:cut]  # a truncated multipart body
    return body, f"multipart/form-data; boundary={boundary}"


CONTENT_TYPES = [
    "application/x-www-form-urlencoded",
    "application/x-www-form-urlencoded; charset=latin-1",
    "application/x-www-form-urlencoded; charset=utf-16",
    "multipart/form-data",
    "multipart/form-data; boundary=",
    "application/json",
    "text/plain",
    "",
    "\u00e9/\u00e9",
]


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """A request body and its Content-Type (None: no body, no header)."""
    choice = draw(st.sampled_from(["none"] * 3 + ["form"] * 3 + ["multipart", "bytes", "huge"]))
    if choice == "none":
        return b"", None
    if choice == "form":
        body = draw(query_strings())
        return body, draw(st.sampled_from(CONTENT_TYPES[:3] + [CONTENT_TYPES[0]] * 3))
    if choice == "multipart":
        return draw(multipart_bodies())
    if choice == "bytes":
        return draw(st.binary(max_size=64)), draw(st.sampled_from(CONTENT_TYPES))
    size = draw(st.integers(MAX_BODY_BYTES - 20, MAX_BODY_BYTES + 20))
    return b"name=i&val=1&pad=" + b"x" * size, CONTENT_TYPES[0]


@st.composite
def api_requests(draw: st.DrawFn) -> dict[str, Any]:
    """Requests shaped like the API's, so that counters change, overflow and fill up."""
    path = draw(st.sampled_from(["/get", "/set", "/inc", "/set", "/inc", "/inc"]))
    methods = ["GET", "HEAD"] if path == "/get" else ["GET", "POST", "HEAD"]
    method = draw(st.sampled_from(methods + ["GET"]))
    query = "&".join(draw(api_pairs())).encode("utf-8", "surrogatepass")
    body, content_type = b"", None
    if method == "POST" and draw(st.booleans()):
        query, body, content_type = b"", query, "application/x-www-form-urlencoded"
    return {"method": method, "path": path, "query": query, "body": body, "content_type": content_type}


@st.composite
def any_requests(draw: st.DrawFn) -> dict[str, Any]:
    method = draw(st.sampled_from(METHODS + ("GET", "POST") * 2))
    body, content_type = draw(bodies()) if draw(st.integers(0, 3)) == 0 or method == "POST" else (b"", None)
    return {
        "method": method,
        "path": draw(paths),
        "query": draw(query_strings()),
        "body": body,
        "content_type": content_type,
    }


requests = st.one_of(api_requests(), any_requests())


# ---------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------


async def table_of(store: Any) -> dict[str, int]:
    """The store's whole table, read from its private state (acceptable in a test)."""
    table = getattr(store, "_table", None)
    if table is not None:
        return dict(table._values)
    if store.strategy == "redis":
        from trio_counters.stores.redis import HASH_KEY

        reply = await store._redis.execute(b"HGETALL", HASH_KEY)
        assert isinstance(reply, dict), reply
        return {name: int(value) for name, value in reply.items()}
    raise AssertionError(f"table_of() does not know how to read a {store.strategy} store")


def check_body(request: dict[str, Any], status: int, content_type: str, body: bytes) -> None:
    method = request["method"]
    if 200 <= status < 300 and method in ("GET", "HEAD") and content_type == "application/json":
        # /stats: one line of JSON.
        assert body.endswith(b"\n") and body.count(b"\n") == 1, body
        json.loads(body)
        return
    if 200 <= status < 300 and method in ("GET", "HEAD") and content_type.startswith("text/plain; version="):
        # /metrics: the Prometheus text format, which the parser must read.
        list(text_string_to_metric_families(body.decode()))
        return
    assert content_type == TEXT, content_type
    text = body.decode("utf-8")
    assert text.endswith("\n") and text.count("\n") == 1, text
    assert "\r" not in text, text


async def send(client: Any, request: dict[str, Any]) -> Any:
    headers = {"content-type": request["content_type"]} if request["content_type"] is not None else {}
    path = request["path"]
    try:
        return await client.open(
            "/",
            method=request["method"],
            headers=headers,
            data=request["body"],
            scope_base={
                "path": path,
                "raw_path": quote(path, safe="/*").encode("ascii"),
                "query_string": request["query"],
            },
        )
    except Exception as error:  # an exception out of the app: hypercorn answers 500
        raise AssertionError(f"the app raised {error!r}; hypercorn would answer 500") from error


# ---------------------------------------------------------------------------------
# The fuzz
# ---------------------------------------------------------------------------------


@settings(max_examples=80)
@given(
    limit=st.integers(len(INITIAL_COUNTERS), len(INITIAL_COUNTERS) + 2),
    preset=st.dictionaries(st.sampled_from(INITIAL_COUNTERS), st.integers(INT64_MAX - 2, INT64_MAX)),
    batch=st.lists(requests, min_size=1, max_size=10),
)
async def test_random_requests_never_fail_and_refusals_change_nothing(
    strategy: str, wipe: Any, limit: int, preset: dict[str, int], batch: list[dict[str, Any]]
) -> None:
    wipe()
    app = create_app(store=strategy, max_counters=limit)
    store = app.extensions["trio_counters"].store
    async with one_error(), app.test_app():
        client = app.test_client()
        for name, value in preset.items():  # counters at the edge of overflow
            await store.set(name, value)
        for step, request in enumerate(batch):
            before = await table_of(store)
            response = await send(client, request)
            status = response.status_code
            body = await response.get_data()
            after = await table_of(store)
            where = (step, request, status, body[:200], before, after)
            event(f"status {status}")

            # No 5xx but the documented 507: a new name past max_counters (503, the
            # store not answering in time, cannot happen here).
            assert status < 500 or (status == 507 and body.startswith(b"cannot create ")), where
            check_body(request, status, response.content_type or "", body)
            if status == 405:
                assert response.headers.get("Allow"), where
            if not 200 <= status < 300:
                assert after == before, where
            else:
                changed = {name for name in after if before.get(name) != after[name]}
                assert set(before) <= set(after), where
                assert len(changed) <= 1, where
                if changed:
                    event("a 2xx changed a counter")
                    assert request["method"] in WRITING_METHODS, where
            assert len(after) <= limit, where
            assert all(INT64_MIN <= value <= INT64_MAX for value in after.values()), where

        # The introspection endpoints still answer after whatever came before.
        stats = await client.get("/stats")
        assert stats.status_code == 200
        json.loads(await stats.get_data())
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        list(text_string_to_metric_families((await metrics.get_data()).decode()))
