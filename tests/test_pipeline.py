"""The lean request pipeline answers exactly as Quart's own, and still notices a client
that leaves while its handler waits on the store.

- Every endpoint and every refusal, in process through Quart's test client and over
  the wire against real servers: the lean pipeline's answers (status, headers, body)
  are byte for byte those of quart-trio's own pipeline. (Only ``/metrics``' latency
  sums and, with them, its length differ from run to run.)
- A client that disconnects while its handler waits for the store ends that request
  (counted ``cancelled``, the increment not applied): in process, where the request
  comes through the fast transport's inbox (no task waits in ``receive``) and where
  it comes through Quart's test client (one watching task); and end to end, against
  a stalled Redis.
- The setting: ``pipeline`` / ``TRIO_COUNTERS_PIPELINE``, and the fallback to Quart's
  own pipeline, with one warning, on a Quart or quart-trio it was not checked against.
"""

from __future__ import annotations

import json
import warnings
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from quart_trio.asgi import TrioASGIHTTPConnection
from quart_trio.wrappers import TrioRequest

from trio_counters import ConfigError, create_app, pipeline
from trio_counters.config import DEFAULT_PIPELINE, PIPELINES
from trio_counters.pipeline import LeanHTTPConnection, LeanRequest, PipelineFallbackWarning
from trio_counters.testing import HOST, Raw, request, run_server
from trio_counters.testing.redis import RedisServer
from trio_counters.transport.inbox import INBOX_EXTENSION, Inbox

FORM = {"content-type": "application/x-www-form-urlencoded"}
MULTIPART = {"content-type": "multipart/form-data; boundary=b"}
PAD = "x" * 5000

#: (method, target, headers, body): every endpoint, every refusal, in an order that
#: makes the counts /stats and /metrics show at the end depend on every answer before.
CASES: list[tuple[str, str, dict[str, str], bytes]] = [
    ("GET", "/set?name=x&val=0", {}, b""),
    ("GET", "/get?name=x", {}, b""),
    ("GET", "/inc?name=x", {}, b""),
    ("GET", "/get?name=x", {}, b""),
    ("HEAD", "/get?name=x", {}, b""),
    ("POST", "/inc?name=j", {}, b""),
    ("POST", "/inc", FORM, b"name=j"),
    ("POST", "/set", FORM, b"name=q&val=-3"),
    ("POST", "/set?name=p", FORM, b"val=5"),
    ("POST", "/inc?name=i", {"content-type": "application/json"}, b'{"name": "j"}'),
    ("POST", "/inc", {"content-type": "application/json"}, b'{"name": "j"}'),
    ("POST", "/inc", {}, b"name=j"),
    ("GET", "/set?name=caf%C3%A9%20au%20lait&val=2", {}, b""),
    ("GET", "/get?name=caf%C3%A9+au+lait", {}, b""),
    ("GET", "/set?name=v&val=%2B5", {}, b""),
    ("GET", "/set?name=v&val=-00000000000000000000000000001", {}, b""),
    ("GET", "/set?name=v&val=9223372036854775807", {}, b""),
    ("GET", "/inc?name=v", {}, b""),  # 409
    ("GET", "/set?name=v&val=9223372036854775808", {}, b""),
    ("GET", "/set?name=v&val=" + "1" * 4000, {}, b""),
    ("GET", "/set?name=v&val=1_000", {}, b""),
    ("GET", "/set?name=v&val=%D9%A3", {}, b""),
    ("GET", "/set?name=v&val=", {}, b""),
    ("GET", "/set?val=1", {}, b""),
    ("GET", "/get?name", {}, b""),
    ("GET", "/get?&&name=i&&", {}, b""),
    ("GET", "/get?name=i;x=1", {}, b""),
    ("GET", "/inc?name=nope", {}, b""),
    ("GET", "/get?name=a%0Ab", {}, b""),
    ("GET", "/get?name=a%E2%80%A8b", {}, b""),
    ("GET", "/get?name=" + "n" * 257, {}, b""),
    ("GET", "/inc?name=i&name=j", {}, b""),
    ("POST", "/set?name=i", FORM, b"name=j&val=1"),
    ("GET", "/set?name=c%ff&val=1", {}, b""),
    ("POST", "/set", FORM, b"name=c%ff&val=1"),
    ("POST", "/set", FORM, b"name=c\xff&val=1"),
    ("GET", "/get?name=c%25FF", {}, b""),
    ("POST", "/inc", MULTIPART, b'--b\r\nContent-Disposition: form-data; name="name"\r\n\r\ni\r\n--b--\r\n'),
    ("POST", "/inc", FORM, b"name=i&pad=" + PAD.encode()),  # 413
    ("GET", "/set?name=i&val=5&pad=" + PAD, {}, b""),  # 414
    ("GET", "/set?name=i&val=5", {"x-padding": "p" * (16 * 1024)}, b""),  # 431
    ("PUT", "/set?name=i&val=5", {"x-padding": "p" * (16 * 1024)}, b""),  # 405 first
    ("GET", "/nothere?pad=" + PAD, {}, b""),  # 414 before 404
    ("OPTIONS", "/get?name=i", {}, b""),
    ("GET", "/nothere", {}, b""),
    ("GET", "//get?name=i", {}, b""),
    ("POST", "/nothere", {}, b""),
    ("HEAD", "/set?name=h&val=5", {}, b""),
    ("HEAD", "/inc?name=i", {}, b""),
    ("DELETE", "/inc?name=i", {}, b""),
    ("POST", "/get?name=i", {}, b""),
    ("PATCH", "/stats", {}, b""),
    ("PUT", "/metrics", {}, b""),
    ("HEAD", "/stats", {}, b""),
    ("HEAD", "/metrics", {}, b""),
    ("GET", "/stats", {}, b""),
    ("GET", "/metrics", {}, b""),
]  # fmt: skip

Answer = tuple[int, list[tuple[str, str]], bytes]


def _comparable(target: str, status: int, headers: list[tuple[str, str]], body: bytes) -> Answer:
    """The answer as it must be the same on every pipeline: /metrics' latency histogram
    (and so its length) is the one part that differs from run to run."""
    if target.startswith("/metrics"):
        body = b"\n".join(line for line in body.split(b"\n") if b"request_duration_seconds" not in line)
        headers = [(name, value) for name, value in headers if name.lower() != "content-length"]
    return status, headers, body


async def _in_process(app: Any, method: str, target: str, headers: dict[str, str], body: bytes, **scope: Any) -> Answer:
    """One request through Quart's test client; the ASGI answer as the app sent it."""
    if body:
        headers = {**headers, "content-length": str(len(body))}
    connection = app.test_client().request(target, method=method, headers=headers, scope_base=scope or None)
    async with connection:
        if body:
            await connection.send(body)
        await connection.send_complete()
    return _comparable(target, connection.status_code, list(connection.headers.items()), bytes(connection.response_data))


async def _answers_in_process(pipeline_name: str) -> list[Answer]:
    answers = []
    app = create_app(store="lock", pipeline=pipeline_name)
    async with app.test_app():
        for method, target, headers, body in CASES:
            answers.append(await _in_process(app, method, target, headers, body))
        # A query string that is not UTF-8 (HTTP/2 lets one through).
        answers.append(await _in_process(app, "GET", "/set", {}, b"", query_string=b"name=i&val=5&x=\xff"))
        # The store does not answer in time: 503 with Retry-After (autojump_clock).
        async with app.extensions["trio_counters"].store._lock:
            answers.append(await _in_process(app, "GET", "/inc?name=i", {}, b""))
        answers.append(await _in_process(app, "GET", "/stats", {}, b""))
    small = create_app(store="lock", max_counters=2, pipeline=pipeline_name)
    async with small.test_app():
        answers.append(await _in_process(small, "GET", "/set?name=new&val=1", {}, b""))  # 507
    return answers


async def test_in_process_every_answer_is_the_same_on_both_pipelines(autojump_clock: Any) -> None:
    lean = await _answers_in_process("lean")
    stock = await _answers_in_process("stock")
    assert len(lean) == len(stock) == len(CASES) + 4
    statuses = {status for status, _, _ in lean}
    assert {200, 400, 404, 405, 409, 413, 414, 415, 431, 503, 507} <= statuses
    extra = ["not UTF-8", "store too slow", "/stats", "counter limit"]
    for case, lean_answer, stock_answer in zip([*CASES, *extra], lean, stock):
        assert lean_answer == stock_answer, case
    retry = [headers for status, headers, _ in lean if status == 503]
    assert retry and ("retry-after", "1") in retry[0]


def _request_bytes(method: str, target: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {HOST}", *(f"{k}: {v}" for k, v in headers.items())]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


#: The headers whose values must match over the wire (date and server are hypercorn's).
WIRE_HEADERS = (b"content-type", b"content-length", b"allow", b"retry-after", b"connection")


async def _answers_over_the_wire(nursery: trio.Nursery, transport: str, pipeline_name: str) -> list[Answer]:
    env = {"TRIO_COUNTERS_STORE": "lock", "TRIO_COUNTERS_TRANSPORT": transport, "TRIO_COUNTERS_PIPELINE": pipeline_name}
    server = await nursery.start(partial(run_server, env=env))
    answers = []
    for method, target, headers, body in CASES:
        async with await Raw.connect(server.port) as raw:
            await raw.send(_request_bytes(method, target, headers, body))
            response = await raw.response(to_head=method == "HEAD")
        kept = [(name.decode(), value.decode()) for name, value in response.headers.items() if name in WIRE_HEADERS]
        answers.append(_comparable(target, response.status, kept, response.body))
    assert server.tracebacks() == []
    return answers


async def test_over_the_wire_every_answer_is_the_same_on_both_pipelines_and_transports(
    nursery: trio.Nursery,
) -> None:
    stock = await _answers_over_the_wire(nursery, "fast", "stock")
    for transport, pipeline_name in (("fast", "lean"), ("stock", "lean"), ("stock", "stock")):
        answers = await _answers_over_the_wire(nursery, transport, pipeline_name)
        for case, answer, expected in zip(CASES, answers, stock):
            assert answer == expected, (transport, pipeline_name, case)
    refused = json.loads(stock[-2][2])["requests"]["refused"]  # /stats counted every answer alike
    assert {"bad_request", "not_found", "method_not_allowed", "request_uri_too_long"} <= set(refused)


# --- a client that leaves while its handler waits on the store ---------------------------


def _stats(app: Any) -> dict[str, Any]:
    recorder = app.asgi_app.recorder
    return {"served": recorder.served(), "refused": recorder.refused()}


class _Delivery:
    """How the server hands a request its messages: through the fast transport's inbox
    (offered in the scope, so the lean pipeline listens and no task reads), or through
    a plain channel's ``receive``, as hypercorn's own transport and Quart's test client do."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        if kind == "inbox":
            self.inbox = Inbox(10)
            self.put, self.receive = self.inbox.put, self.inbox.receive
        else:
            put, get = trio.open_memory_channel[dict[str, Any]](10)
            self.put, self.receive = put.send, get.receive

    async def serve(self, app: Any, target: str, answers: list[dict[str, Any]]) -> None:
        path, _, query = target.partition("?")
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": path, "raw_path": target.encode(), "query_string": query.encode(),
            "root_path": "", "headers": [(b"host", b"127.0.0.1")], "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 2), "extensions": {INBOX_EXTENSION: self.inbox} if self.kind == "inbox" else {},
        }  # fmt: skip

        async def send(message: dict[str, Any]) -> None:
            answers.append(message)

        await app(scope, self.receive, send)


@pytest.mark.parametrize("delivery", ["inbox", "channel"])
@pytest.mark.parametrize("pipeline_name", PIPELINES)
async def test_a_disconnect_cancels_a_handler_waiting_on_the_store(pipeline_name: str, delivery: str) -> None:
    app = create_app(store="lock", pipeline=pipeline_name)
    async with app.test_app():
        store = app.extensions["trio_counters"].store
        answers: list[dict[str, Any]] = []
        async with trio.open_nursery() as nursery:
            async with store._lock:  # the handler will wait here
                client = _Delivery(delivery)
                await client.put({"type": "http.request", "body": b"", "more_body": False})
                nursery.start_soon(client.serve, app, "/inc?name=i", answers)
                await trio.testing.wait_all_tasks_blocked()
                assert store.statistics().guard.tasks_waiting == 1
                await client.put({"type": "http.disconnect"})
                await trio.testing.wait_all_tasks_blocked()
                assert store.statistics().guard.tasks_waiting == 0  # noticed, the lock still held
        assert answers == []
        assert _stats(app)["refused"] == {"cancelled": 1}

        # An ordinary request is answered; the disconnect that ends it cancels nothing.
        client = _Delivery(delivery)
        await client.put({"type": "http.request", "body": b"", "more_body": False})
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.serve, app, "/inc?name=i", answers)
            await trio.testing.wait_all_tasks_blocked()
            await client.put({"type": "http.disconnect"})
        assert answers[0]["status"] == 200
        assert b"".join(message.get("body", b"") for message in answers[1:]) == b"ok\n"
        assert _stats(app) == {"served": {"/inc": 1}, "refused": {"cancelled": 1}}
        assert store.statistics().counters == 2 and store._table.get("i") == 1


@pytest.mark.parametrize("pipeline_name", PIPELINES)
async def test_end_to_end_a_client_that_leaves_while_redis_stalls_is_noticed(
    nursery: trio.Nursery, pipeline_name: str
) -> None:
    """Redis stops answering (SIGSTOP); two clients' increments wait on the store, no
    answer coming; they hang up; both requests end, ``cancelled``, long before
    ``redis_timeout``."""
    with RedisServer() as redis:
        env = {
            "TRIO_COUNTERS_STORE": "redis", "TRIO_COUNTERS_REDIS_URL": redis.url(),
            "TRIO_COUNTERS_REDIS_TIMEOUT": "30", "TRIO_COUNTERS_STORE_TIMEOUT": "60",
            "TRIO_COUNTERS_PIPELINE": pipeline_name,
        }  # fmt: skip
        server = await nursery.start(partial(run_server, env=env))
        assert (await request(server.port, "/set?name=i&val=0")).status == 200

        async def stats() -> dict[str, Any]:
            return json.loads((await request(server.port, "/stats")).body)  # type: ignore[no-any-return]

        redis.pause()
        try:
            clients = [await Raw.connect(server.port) for _ in range(2)]
            for raw in clients:
                await raw.send(b"GET /inc?name=i HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            with trio.move_on_after(0.5):  # no answer: each waits on the stopped Redis
                await clients[-1].until(b"\r\n")
            assert not any(raw.buffer for raw in clients)
            for raw in clients:
                raw.abort()
                await raw.aclose()
            with trio.fail_after(5):  # redis_timeout is 30 s: this is the disconnect
                while (await stats())["requests"]["refused"].get("cancelled", 0) < 2:
                    await trio.sleep(0.01)
        finally:
            redis.resume()
    assert (await stats())["requests"]["refused"] == {"cancelled": 2}


# --- the setting and the fallback ----------------------------------------------------------


def test_the_setting_picks_the_pipeline_and_lean_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert DEFAULT_PIPELINE == "lean"
    monkeypatch.delenv("TRIO_COUNTERS_PIPELINE", raising=False)
    app = create_app()
    assert pipeline.active(app) == "lean"
    assert (app.asgi_http_class, app.request_class) == (LeanHTTPConnection, LeanRequest)
    monkeypatch.setenv("TRIO_COUNTERS_PIPELINE", "stock")
    app = create_app()
    assert pipeline.active(app) == "stock"
    assert (app.asgi_http_class, app.request_class) == (TrioASGIHTTPConnection, TrioRequest)
    assert pipeline.active(create_app(pipeline="lean")) == "lean"  # an argument wins
    monkeypatch.setenv("TRIO_COUNTERS_PIPELINE", "Lean")
    with pytest.raises(ConfigError, match=r"^TRIO_COUNTERS_PIPELINE \(pipeline\) must be one of lean, stock, got 'Lean'$"):
        create_app()


@pytest.mark.parametrize(("package", "version"), [("quart", "0.23.0"), ("quart-trio", "0.11.1")])
def test_another_quart_gets_quarts_own_pipeline_and_one_warning(
    monkeypatch: pytest.MonkeyPatch, package: str, version: str
) -> None:
    real = pipeline._version
    monkeypatch.setattr(pipeline, "_version", lambda name: version if name == package else real(name))
    monkeypatch.setattr(pipeline, "_warned", False)
    with pytest.warns(PipelineFallbackWarning, match=f"{package} is {version}; the lean pipeline was checked"):
        first = create_app(pipeline="lean")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = create_app(pipeline="lean")  # once per process
    for app in (first, second):
        assert pipeline.active(app) == "stock"
        assert app.request_class is TrioRequest
