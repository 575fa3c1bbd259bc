"""The fast transport's per-request inbox: an ordinary ASGI ``receive``, or, for an app
that listens, each message handed over as it arrives -- the queued ones first."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from trio_counters.transport.inbox import Inbox


def _message(n: int) -> dict[str, Any]:
    return {"type": "http.request", "body": str(n).encode(), "more_body": True}


async def test_a_listener_gets_the_queued_messages_first_then_each_as_it_comes() -> None:
    inbox = Inbox(10)
    await inbox.put(_message(0))
    await inbox.put(_message(1))
    heard: list[dict[str, Any]] = []
    inbox.listen(heard.append)
    assert heard == [_message(0), _message(1)]
    await inbox.put(_message(2))
    assert heard[-1] == _message(2)
    assert inbox._get_end is None  # no channel was ever made
    inbox.listen(lambda message: None)  # replaced: nothing more reaches the first
    await inbox.put(_message(3))
    assert len(heard) == 3


async def test_receive_gives_every_message_in_order() -> None:
    inbox = Inbox(10)
    await inbox.put(_message(0))  # before anyone reads
    got = []
    async with trio.open_nursery() as nursery:

        async def reader() -> None:
            for _ in range(3):
                got.append(await inbox.receive())

        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        await inbox.put(_message(1))
        await inbox.put(_message(2))
    assert got == [_message(0), _message(1), _message(2)]


async def test_a_full_inbox_makes_the_transport_wait_for_the_app() -> None:
    inbox = Inbox(2)
    put_done = trio.Event()
    async with trio.open_nursery() as nursery:

        async def transport() -> None:
            for n in range(3):
                await inbox.put(_message(n))
            put_done.set()

        nursery.start_soon(transport)
        await trio.testing.wait_all_tasks_blocked()
        assert not put_done.is_set()  # two held, the third waits: backpressure
        assert await inbox.receive() == _message(0)
        await trio.testing.wait_all_tasks_blocked()
        assert put_done.is_set()
        assert [await inbox.receive(), await inbox.receive()] == [_message(1), _message(2)]


async def test_a_listener_takes_over_from_a_waiting_put() -> None:
    inbox = Inbox(1)
    heard: list[dict[str, Any]] = []
    async with trio.open_nursery() as nursery:

        async def transport() -> None:
            await inbox.put(_message(0))
            await inbox.put(_message(1))  # waits: the inbox is full
            await inbox.put(_message(2))

        nursery.start_soon(transport)
        await trio.testing.wait_all_tasks_blocked()
        inbox.listen(heard.append)
    assert heard == [_message(0), _message(1), _message(2)]
