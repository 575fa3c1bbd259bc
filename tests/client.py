"""A small HTTP/1.1 client for the end-to-end tests: trio sockets and h11.

It speaks to the real server the way curl and ab do, including HTTP/1.0 without
keep-alive, and reports what came back, EOF included.
"""

from __future__ import annotations

import dataclasses

import h11
import trio

__all__ = ["Reply", "Connection", "request"]


@dataclasses.dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: str


class Connection:
    """One keep-alive connection; ``request()`` may be called again and again."""

    def __init__(self, stream: trio.SocketStream, host: str) -> None:
        self.stream = stream
        self.host = host
        self.h11 = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, port: int, host: str = "127.0.0.1") -> Connection:
        return cls(await trio.open_tcp_stream(host, port), f"{host}:{port}")

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def request(
        self, target: str, *, method: str = "GET", headers: list[tuple[str, str]] = (), body: bytes = b""
    ) -> Reply:
        if self.h11.our_state is h11.DONE:
            self.h11.start_next_cycle()
        all_headers = [("Host", self.host), *headers]
        if body:
            all_headers.append(("Content-Length", str(len(body))))
        data = self.h11.send(h11.Request(method=method, target=target, headers=all_headers))
        if body:
            data += self.h11.send(h11.Data(data=body))
        data += self.h11.send(h11.EndOfMessage())
        await self.stream.send_all(data)
        return await self._read_reply()

    async def _read_reply(self) -> Reply:
        response: h11.Response | None = None
        body = bytearray()
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as error:  # e.g. EOF before the reply
                raise ConnectionError(f"server closed the connection before replying: {error}") from None
            if event is h11.NEED_DATA:
                self.h11.receive_data(await self.stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert response is not None
                return Reply(
                    status=response.status_code,
                    headers={k.decode().lower(): v.decode() for k, v in response.headers},
                    body=body.decode(),
                )
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("server closed the connection before replying")


async def request(port: int, target: str, **kwargs: object) -> Reply:
    """One request on a connection of its own."""
    async with await Connection.open(port) as connection:
        return await connection.request(target, **kwargs)  # type: ignore[arg-type]
