"""Shared test helpers: a raw protocol client (no SDK) for engine-level tests."""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from iii_trio._ws import WebSocket, connect_websocket
from iii_trio.protocol import JSON, Message, decode, encode

MiB = 1024 * 1024


class RawClient:
    """A worker connection driven message by message, to test the engine without the SDK."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws

    @classmethod
    async def connect(cls, url: str, path: str = "/", **kwargs: Any) -> RawClient:
        ws = await connect_websocket(url + path, max_message_size=128 * MiB, **kwargs)
        return cls(ws)

    async def send(self, msg: Message | dict[str, JSON] | str | bytes) -> None:
        if isinstance(msg, dict):
            await self.ws.send(json.dumps(msg))
        elif isinstance(msg, str | bytes):
            await self.ws.send(msg)
        else:
            await self.ws.send(encode(msg))

    async def receive(self) -> Message:
        return decode(await self.ws.receive())

    async def receive_json(self) -> dict[str, Any]:
        raw = await self.ws.receive()
        obj = json.loads(raw)
        assert isinstance(obj, dict)
        return obj

    async def expect(self, kind: type[Any]) -> Any:
        """The next message of type ``kind``, skipping others (e.g. workerregistered)."""
        while True:
            msg = await self.receive()
            if isinstance(msg, kind):
                return msg

    async def aclose(self) -> None:
        await self.ws.close()


LOCAL_TRANSPORT = os.environ.get("IIITRIO_TEST_TRANSPORT") == "local"


def transport(engine: Any) -> Any:
    """The dialer a test worker of ``engine`` uses: the engine's in-process one when the run
    asks for it (``IIITRIO_TEST_TRANSPORT=local``, the second pass of ``nox -s tests``),
    else ``None`` (loopback TCP)."""
    return engine.local_dialer if LOCAL_TRANSPORT else None


def new_id() -> str:
    return str(uuid.uuid4())


async def wait_for(engine: Any, predicate: Any, timeout: float = 10) -> None:
    with trio.fail_after(timeout):
        await engine.wait_until(predicate)


def small_window_dialer(
    url: str, window: int = 32 * 1024
) -> Callable[[], Awaitable[trio.abc.Stream]]:
    """A dialer for ``url``'s host whose socket has a small kernel receive buffer, so that a
    client that does not read shows up in the engine after a few KiB rather than after the
    tens of MiB Linux would otherwise buffer on loopback."""
    host, port = url.removeprefix("ws://").rsplit(":", 1)

    async def dial() -> trio.abc.Stream:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, window)
        await sock.connect((host, int(port)))
        return trio.SocketStream(sock)

    return dial
