"""What the request path does cheaply gives what the plain way would.

- ``decode``'s shortcut for a query with nothing to decode is ``parse_qsl`` exactly;
- the header count of the 431 check is ``request.headers``' names and values;
- ``TextResponse`` built from a string is the response TrioResponse would build;
- the gate counts every answer (``cancelled`` included) under keys it made once,
  and refuses a query string that is not UTF-8 before Quart sees it.
"""

from __future__ import annotations

from itertools import chain
from typing import Any
from urllib.parse import parse_qsl

import pytest
from hypothesis import given
from hypothesis import strategies as st
from quart_trio.wrappers import TrioResponse
from werkzeug.exceptions import BadRequest

from trio_counters import create_app
from trio_counters.gate import Gate
from trio_counters.params import decode
from trio_counters.responses import TextResponse

#: Queries made of the characters that matter to the split: separators, '=', '%', '+'.
queries = st.one_of(
    st.text(alphabet=st.sampled_from("ab=&;%+ 2Fé\x00"), max_size=24).map(str.encode),
    st.binary(max_size=12),
)


@given(queries)
def test_decode_is_parse_qsl_strict_with_blank_values(raw: bytes) -> None:
    try:
        expected = parse_qsl(raw.decode(), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        with pytest.raises(BadRequest):
            decode(raw, "query string")
        return
    assert decode(raw, "query string") == expected


@pytest.mark.parametrize(
    "raw", [b"", b"name=i", b"&&name=i&&", b"name", b"name=", b"=i", b"a=b=c", b"name=i;x=1", b"name=i&name=j"]
)
def test_decode_shortcut_examples(raw: bytes) -> None:
    assert decode(raw, "query string") == parse_qsl(raw.decode(), keep_blank_values=True)


class _PlainText(TrioResponse):
    default_mimetype = "text/plain"


@pytest.mark.parametrize("status", [None, 200, 404, 503])
@pytest.mark.parametrize("body", ["ok\n", "", "café: 3\n"])
def test_text_response_from_a_string_is_trio_responses(body: str, status: int | None) -> None:
    fast, plain = TextResponse(body, status), _PlainText(body, status)
    assert list(fast.headers.items()) == list(plain.headers.items())
    assert (fast.status, fast.status_code, fast.timeout) == (plain.status, plain.status_code, plain.timeout)
    assert (fast.response.data, type(fast.response)) == (plain.response.data, type(plain.response))
    assert vars(fast).keys() == vars(plain).keys()


async def test_the_header_count_is_request_headers_names_and_values() -> None:
    app = create_app(store="lock")
    seen: list[tuple[int, int]] = []

    @app.before_request
    async def compare() -> None:
        from quart import request

        counted = sum(map(len, chain.from_iterable(request.headers)))
        seen.append((counted, sum(len(name) + len(value) for name, value in request.headers.items())))

    headers = {"X-A": "1", "x-b": "é" * 3, "X-Dup": "a"}
    async with app.test_app():
        await app.test_client().get("/get?name=i", headers=headers)
    assert seen and seen[0][0] == seen[0][1]


def _recorder(app: Any) -> Any:
    gate = app.asgi_app
    assert isinstance(gate, Gate)
    return gate.recorder


async def test_the_gate_counts_each_answer_under_keys_made_once() -> None:
    app = create_app(store="lock")
    async with app.test_app():
        client = app.test_client()
        for _ in range(3):
            await client.get("/inc?name=i")
            await client.get("/nothere")
        recorder = _recorder(app)
        keys = list(recorder.answered)
        for _ in range(3):
            await client.get("/inc?name=i")
        assert list(recorder.answered) == keys  # no new keys...
        assert all(a is b for a, b in zip(recorder.answered, keys))  # ...the same objects
        assert dict(recorder.answered) == {("/inc", "200"): 6, ("other", "404"): 3}


async def test_the_gate_refuses_a_query_string_that_is_not_utf8_and_counts_it() -> None:
    app = create_app(store="lock")
    async with app.test_app():
        response = await app.test_client().get("/inc", scope_base={"query_string": b"name=\xff"})
        assert response.status_code == 400
        assert await response.get_data() == b"query string is not valid UTF-8\n"
        assert dict(_recorder(app).answered) == {("/inc", "400"): 1}
        assert app.extensions["trio_counters"].store._table.get("i") == 0
