"""HEAD changes nothing, and every counter name has exactly one spelling.

Through Quart's test client for every strategy, and once over the wire against the
real server, since ``curl -I`` is how a HEAD usually arrives.
"""

from __future__ import annotations

from functools import partial

import pytest
import trio

from trio_counters.app import ALLOWED_METHODS
from trio_counters.testing import Raw, run_server, value_of

FORM = {"content-type": "application/x-www-form-urlencoded"}


async def call(client, method: str, path: str, **kwargs) -> tuple[int, str, str | None]:  # type: ignore[no-untyped-def]
    response = await client.open(path, method=method, **kwargs)
    return response.status_code, (await response.get_data()).decode(), response.headers.get("Allow")


async def table(client) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The values of the counters these tests touch, as /get answers them."""
    names = ["i", "j", "h", "c%FF", "c%FE", "c%80", "c\ufffd", "x y", "café", "cafe\u0301"]
    answers = {}
    for name in names:
        status, body, _ = await call(client, "GET", "/get", query_string={"name": name})
        answers[name] = body if status == 200 else str(status)
    return answers


async def test_head_on_set_and_inc_is_405_and_changes_nothing(client) -> None:  # type: ignore[no-untyped-def]
    before = await table(client)
    assert await call(client, "HEAD", "/inc?name=i") == (405, "method HEAD not allowed here; use GET, POST\n", "GET, POST")
    assert await call(client, "HEAD", "/set?name=h&val=5") == (405, "method HEAD not allowed here; use GET, POST\n", "GET, POST")
    assert await table(client) == before


@pytest.mark.parametrize("path", ["/get?name=i", "/stats", "/metrics"])
async def test_head_stays_on_the_endpoints_that_only_read(client, path: str) -> None:  # type: ignore[no-untyped-def]
    status, _, _ = await call(client, "HEAD", path)
    assert status == 200


@pytest.mark.parametrize("path", sorted(ALLOWED_METHODS))
async def test_405_allow_header_says_exactly_what_each_endpoint_takes(client, path: str) -> None:  # type: ignore[no-untyped-def]
    status, body, allow = await call(client, "PUT", path)
    assert status == 405
    assert allow == ", ".join(ALLOWED_METHODS[path])
    assert body == f"method PUT not allowed here; use {allow}\n"


@pytest.mark.parametrize("escape", ["%ff", "%fe", "%80", "%c3", "%ed%a0%80"])
async def test_an_escape_that_is_not_utf8_is_400_in_the_query_and_the_form(client, escape: str) -> None:  # type: ignore[no-untyped-def]
    before = await table(client)
    query = f"/set?name=c{escape}&val=1"
    assert await call(client, "GET", query) == (400, "query string is not valid UTF-8 once percent-decoded\n", None)
    form = f"name=c{escape}&val=1".encode()
    assert await call(client, "POST", "/set", data=form, headers=FORM) == (
        400,
        "form body is not valid UTF-8 once percent-decoded\n",
        None,
    )
    assert await call(client, "POST", "/inc", data=b"name=i" + escape.encode(), headers=FORM) == (
        400,
        "form body is not valid UTF-8 once percent-decoded\n",
        None,
    )
    assert await table(client) == before


async def test_a_literal_percent_is_its_own_name(client) -> None:  # type: ignore[no-untyped-def]
    assert (await call(client, "GET", "/set?name=c%25FF&val=7"))[0] == 200
    assert await call(client, "GET", "/get?name=c%25FF") == (200, "c%FF: 7\n", None)
    assert (await call(client, "GET", "/get?name=c%25ff"))[0] == 404  # case is part of the name


async def test_query_and_form_spell_a_name_the_same_way(client) -> None:  # type: ignore[no-untyped-def]
    assert (await call(client, "POST", "/set", data=b"name=x+y&val=1", headers=FORM))[0] == 200
    assert (await call(client, "POST", "/inc", data=b"name=x%20y", headers=FORM))[0] == 200
    assert (await call(client, "GET", "/inc?name=x%20y"))[0] == 200
    assert await call(client, "GET", "/get?name=x+y") == (200, "x y: 3\n", None)


async def test_names_keep_their_exact_code_points(client) -> None:  # type: ignore[no-untyped-def]
    """No Unicode normalisation: a composed é and e + U+0301 are two counters."""
    assert (await call(client, "GET", "/set?name=caf%C3%A9&val=1"))[0] == 200
    assert (await call(client, "GET", "/get?name=cafe%CC%81"))[0] == 404
    assert (await call(client, "GET", "/set?name=cafe%CC%81&val=2"))[0] == 200
    assert await call(client, "GET", "/get?name=caf%C3%A9") == (200, "café: 1\n", None)


async def test_a_multipart_form_is_415_and_changes_nothing(client) -> None:  # type: ignore[no-untyped-def]
    before = await table(client)
    body = b'--b\r\nContent-Disposition: form-data; name="name"\r\n\r\ni\r\n--b--\r\n'
    status, message, _ = await call(
        client, "POST", "/inc", data=body, headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert (status, message) == (
        415,
        "send the form as application/x-www-form-urlencoded (curl -d), or use the query string\n",
    )
    assert await table(client) == before


async def test_head_over_the_wire_like_curl_dash_i_changes_nothing(nursery: trio.Nursery) -> None:
    server = await nursery.start(partial(run_server, env={"TRIO_COUNTERS_STORE": "lock"}))
    async with await Raw.connect(server.port) as raw:
        for target in ("/inc?name=i", "/set?name=h&val=5"):
            await raw.send(f"HEAD {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            response = await raw.response(to_head=True)
            assert (response.status, response.headers[b"allow"]) == (405, b"GET, POST")
    assert await value_of(server.port, "i") == 0
    assert await value_of(server.port, "h") is None
