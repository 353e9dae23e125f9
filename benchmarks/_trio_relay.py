"""A reference point for benchmark 3: the raw JSON relay's work, done by a trio program.

usage: python -m benchmarks._trio_relay

The same protocol and routing as ``_raw jrelay`` (newline-delimited JSON; each request gets
its own id on the way to the worker and its caller's id back), with the same blocking
``jcaller`` and ``jworker`` at the ends, but the relay is one trio task per direction over
``trio.SocketStream``: no WebSocket framing, no message classes, no invocation table. The
difference between this relay and the blocking one is what the event loop and its socket
layer cost; the difference between this relay and the engine is what iii_trio adds.
"""

from __future__ import annotations

import trio

from ._common import emit
from ._raw import HOST, LineBuffer, Router, join_lines


class _Lines:
    """Newline-delimited messages over a trio stream (see ``_raw._LineSocket``)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._lines = LineBuffer()

    async def receive(self) -> list[bytes]:
        while True:
            data = await self.stream.receive_some(65536)
            if not data:
                return []
            if lines := self._lines.feed(data):
                return lines

    async def send(self, lines: list[bytes]) -> None:
        await self.stream.send_all(join_lines(lines))


async def _accept_roles(listener: trio.SocketListener) -> dict[str, trio.SocketStream]:
    conns: dict[str, trio.SocketStream] = {}
    while len(conns) < 2:
        stream = await listener.accept()
        role = (await stream.receive_some(1)).decode()
        if role not in ("C", "K") or role in conns:
            await stream.aclose()
            continue
        conns[role] = stream
    return conns


async def relay() -> None:
    listeners = await trio.open_tcp_listeners(0, host=HOST)
    emit({"event": "ready", "port": listeners[0].socket.getsockname()[1]})
    conns = await _accept_roles(listeners[0])
    caller, worker = _Lines(conns["C"]), _Lines(conns["K"])
    router = Router()

    async def forward_calls() -> None:
        while lines := await caller.receive():
            await worker.send(router.calls(lines))
        await worker.stream.send_eof()

    async def forward_results() -> None:
        while lines := await worker.receive():
            await caller.send(router.results(lines))
        await caller.stream.send_eof()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(forward_calls)
        nursery.start_soon(forward_results)


if __name__ == "__main__":
    trio.run(relay)
