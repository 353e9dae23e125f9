"""A small HTTP/1.1 client over trio and h11 for the tests: it streams request bodies, reads
response bodies chunk by chunk, and tells a whole body from a cut one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from urllib.parse import urlsplit

import h11
import trio


class Truncated(Exception):
    """The connection ended before the response's end (a cut body)."""


class HttpClient:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)
        self.sent = 0

    @classmethod
    async def connect(cls, url: str) -> HttpClient:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        return cls(await trio.open_tcp_stream(parts.hostname, parts.port))

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def send_request(
        self,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes | AsyncIterator[bytes] | None = None,
        *,
        length: int | None = None,
    ) -> None:
        names = [("host", "test")]
        if isinstance(body, bytes):
            names.append(("content-length", str(len(body))))
        elif body is not None:
            names.append(
                ("content-length", str(length))
                if length is not None
                else ("transfer-encoding", "chunked")
            )
        request = h11.Request(method=method, target=target, headers=[*names, *headers])
        await self.stream.send_all(self.conn.send(request) or b"")
        if isinstance(body, bytes):
            if body:
                await self.stream.send_all(self.conn.send(h11.Data(data=body)) or b"")
        elif body is not None:
            async for chunk in body:
                await self.stream.send_all(self.conn.send(h11.Data(data=chunk)) or b"")
                self.sent += len(chunk)
        if body is None or length is None or self.sent == length or isinstance(body, bytes):
            await self.stream.send_all(self.conn.send(h11.EndOfMessage()) or b"")

    async def _event(self) -> h11.Event:
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                data = await self.stream.receive_some(65536)
                self.conn.receive_data(data)
                continue
            assert isinstance(event, h11.Event)
            return event

    async def response(self) -> h11.Response:
        while True:
            event = await self._event()
            if isinstance(event, h11.Response):
                return event
            if isinstance(event, h11.ConnectionClosed):
                raise Truncated("closed before a response")

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body, as it arrives; :class:`Truncated` if the connection is cut first."""
        while True:
            try:
                event = await self._event()
            except (h11.RemoteProtocolError, trio.BrokenResourceError) as exc:
                raise Truncated(str(exc)) from exc
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return
            elif isinstance(event, h11.ConnectionClosed):
                raise Truncated("closed in the body")

    async def body(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    def next_cycle(self) -> None:
        self.conn.start_next_cycle()


def header(response: h11.Response, name: str) -> str | None:
    for key, value in response.headers:
        if key.decode("latin-1").lower() == name.lower():
            return value.decode("latin-1")
    return None


async def fetch(
    url: str,
    method: str,
    target: str,
    *,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes | None = None,
) -> tuple[h11.Response, bytes]:
    """One request on a new connection: the response and its whole body."""
    async with await HttpClient.connect(url) as client:
        await client.send_request(method, target, headers, body)
        response = await client.response()
        return response, await client.body()
