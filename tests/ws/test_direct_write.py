"""``WebSocket.send_many_nowait``: a write from the calling task with no schedule point. When
the kernel takes only part of a batch, the rest (the tail) must go out before anything sent
later, so the peer still sees whole messages in order."""

from __future__ import annotations

import trio
import trio.testing

from iii_trio._ws import WebSocket

MESSAGE = 256 * 1024


async def _tcp_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        accepted: list[trio.SocketStream] = []

        async def accept() -> None:
            accepted.append(await listeners[0].accept())

        nursery.start_soon(accept)
        client = await trio.open_tcp_stream("127.0.0.1", port)
    await listeners[0].aclose()
    return accepted[0], client


def _pending(ws: WebSocket) -> bool:
    return ws.tail_pending  # a call, so that type checkers do not narrow the property


def _message(n: int) -> bytes:
    return n.to_bytes(4, "big") * (MESSAGE // 4)


async def test_partial_direct_write_keeps_order() -> None:
    server_stream, client_stream = await _tcp_pair()
    server = WebSocket(server_stream, is_client=False, max_message_size=1 << 20)
    client = WebSocket(client_stream, is_client=True, max_message_size=1 << 20)
    written = 0
    # Nobody reads yet: the kernel buffers fill up, until a write is only partly taken.
    for n in range(4096):  # 1 GiB at most; loopback buffers hold a few MiB
        assert server.send_many_nowait([_message(n)])
        written += 1
        if _pending(server):
            break
    assert _pending(server), "the socket never pushed back"
    # While a tail is pending, nothing may be written past it.
    assert not server.send_many_nowait([b"overtaking"])

    received: list[bytes] = []
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.send_many, [b"after the tail"])  # waits for the reader
            for _ in range(written + 1):
                message = await client.receive()
                assert isinstance(message, bytes)
                received.append(message)
    assert received[:written] == [_message(n) for n in range(written)]
    assert received[written] == b"after the tail"
    assert not _pending(server)
    # The socket is empty again: a direct write is whole once more.
    assert server.send_many_nowait([b"direct"])
    assert not _pending(server)
    with trio.fail_after(5):
        assert await client.receive() == b"direct"
    await server_stream.aclose()
    await client_stream.aclose()


async def test_flush_writes_the_tail_alone() -> None:
    server_stream, client_stream = await _tcp_pair()
    server = WebSocket(server_stream, is_client=False, max_message_size=1 << 20)
    client = WebSocket(client_stream, is_client=True, max_message_size=1 << 20)
    written = 0
    for n in range(4096):
        assert server.send_many_nowait([_message(n)])
        written += 1
        if _pending(server):
            break
    assert _pending(server)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.flush)
            for n in range(written):
                assert await client.receive() == _message(n)
    assert not _pending(server)
    await server_stream.aclose()
    await client_stream.aclose()


async def test_an_idle_connection_holds_no_receive_buffer() -> None:
    # Ten thousand idle workers would otherwise hold 16 KiB each while they wait. (A bulk
    # reader keeps its grown buffer between reads; the next small read lets it go.)
    server_stream, client_stream = await _tcp_pair()
    server = WebSocket(server_stream, is_client=False, max_message_size=1 << 20)
    client = WebSocket(client_stream, is_client=True, max_message_size=1 << 20)
    messages: list[str | bytes] = ["hello", b"x" * 100_000, "small again"]
    received: list[str | bytes] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:

            async def receive_all() -> None:
                while True:
                    received.append(await server.receive())

            nursery.start_soon(receive_all)
            for message in messages:
                await client.send(message)
                await trio.testing.wait_all_tasks_blocked()
                assert received[-1] == message  # and the server waits for the next one
                if isinstance(message, str):
                    assert server.receive_capacity == 0
            nursery.cancel_scope.cancel()
    await client.abort()
    await server.abort()
