"""A receive() that starts while close() is already draining the socket itself must see the
closed connection, not BusyResourceError (a watcher task started just before a close)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from iii_trio._ws import ConnectionClosed, WebSocket


async def test_receive_during_close_drain_reports_closed() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    client = WebSocket(client_stream, is_client=True, max_message_size=1 << 20)
    server = WebSocket(server_stream, is_client=False, max_message_size=1 << 20)
    outcome: list[BaseException] = []

    async def late_receiver() -> None:
        try:
            await client.receive()
        except (ConnectionClosed, trio.ClosedResourceError) as exc:
            outcome.append(exc)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.close, 1000, "bye")  # drains by itself: nobody receives
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(late_receiver)  # arrives while close() is draining
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(ConnectionClosed):
                await server.receive()  # answers the close handshake
    assert len(outcome) == 1 and isinstance(outcome[0], trio.ClosedResourceError | ConnectionClosed)
