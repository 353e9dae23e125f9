"""The one Outbox (engine and SDK): order, bounds, waiting senders, close and flush.

Driven over in-process message sockets (no network: the socket is not the point here) and
over a loopback TCP WebSocket whose peer does not read, where the kernel buffer fills up.
"""

from __future__ import annotations

import sys

import pytest
import trio
import trio.testing

from iii_trio._ws import MemoryWebSocket, Outbox, memory_websocket_pair
from iii_trio._ws._memory import PIPE_CAPACITY


def _pair() -> tuple[MemoryWebSocket, MemoryWebSocket]:
    return memory_websocket_pair(client_max_message_size=1 << 30, server_max_message_size=1 << 30)


async def _drain(ws, n: int) -> list[str | bytes]:
    return [await ws.receive() for _ in range(n)]


async def test_messages_arrive_in_order_direct_and_queued(nursery) -> None:
    sender, receiver = _pair()
    outbox = Outbox(sender, limit=1 << 20)
    nursery.start_soon(outbox.run)
    await trio.testing.wait_all_tasks_blocked()
    # Idle writer: the first goes out directly; a burst is queued behind it.
    for i in range(100):
        assert outbox.post(f"m{i}", burst=i % 3 == 0)
    assert await _drain(receiver, 100) == [f"m{i}" for i in range(100)]
    await trio.testing.wait_all_tasks_blocked()
    assert outbox.statistics().queued_messages == 0
    assert outbox.queued_bytes == 0


async def test_bounds_refuse_without_waiting() -> None:
    sender, _receiver = _pair()
    big = "x" * 1000
    size = sys.getsizeof(big)
    # No writer runs, so everything stays queued.
    outbox = Outbox(sender, limit=3 * size, hard_limit=5 * size, max_messages=10)
    assert all(outbox.offer(big, burst=True) for _ in range(3))
    assert not outbox.offer(big, burst=True)  # over the soft limit
    assert outbox.queued_bytes == 3 * size
    assert outbox.post(big, burst=True) and outbox.post(big, burst=True)
    assert outbox.over_limit
    assert not outbox.post(big, burst=True)  # over the hard limit
    assert outbox.statistics().queued_messages == 5
    assert outbox.statistics().peak_bytes == 5 * size


async def test_message_count_is_bounded_too() -> None:
    sender, _receiver = _pair()
    outbox = Outbox(sender, limit=1 << 30, max_messages=4)
    assert all(outbox.post("x", burst=True) for _ in range(4))
    assert not outbox.post("x", burst=True)
    assert not outbox.offer("x", burst=True)


async def test_an_empty_outbox_takes_one_message_of_any_size() -> None:
    sender, _receiver = _pair()
    outbox = Outbox(sender, limit=10, hard_limit=10)
    assert outbox.post("y" * 10_000, burst=True)
    assert not outbox.post("y", burst=True)


async def test_send_waits_for_room_and_bytes_count_until_written(nursery) -> None:
    sender, receiver = _pair()
    chunk = "z" * (PIPE_CAPACITY // 2)
    outbox = Outbox(sender, limit=sys.getsizeof(chunk) * 2)
    nursery.start_soon(outbox.run)
    sent = 0

    async def send_many() -> None:
        nonlocal sent
        for _ in range(8):
            await outbox.send(chunk)
            sent += 1

    nursery.start_soon(send_many)
    await trio.testing.wait_all_tasks_blocked()
    # The socket took two chunks (its own capacity), the outbox holds two more (one batch in
    # the writer's hands counts until written): the sender waits.
    assert sent < 8
    assert outbox.queued_bytes <= 2 * sys.getsizeof(chunk)
    received = await _drain(receiver, 8)
    assert received == [chunk] * 8
    await trio.testing.wait_all_tasks_blocked()
    assert sent == 8


async def test_close_delivers_what_is_queued_then_run_returns() -> None:
    sender, receiver = _pair()
    outbox = Outbox(sender, limit=1 << 20)
    for i in range(5):
        outbox.post(str(i), burst=True)
    outbox.close()
    assert outbox.post("late")  # dropped: the connection is going away
    with trio.fail_after(5):
        await outbox.run()
    assert await _drain(receiver, 5) == ["0", "1", "2", "3", "4"]
    with pytest.raises(trio.ClosedResourceError):
        await outbox.send("after close")


async def test_flush_writes_everything_from_the_calling_task() -> None:
    sender, receiver = _pair()
    outbox = Outbox(sender, limit=1 << 20)
    for i in range(3):
        outbox.post(str(i), burst=True)
    await outbox.flush()
    assert outbox.queued_bytes == 0
    assert await _drain(receiver, 3) == ["0", "1", "2"]


async def test_a_broken_socket_fails_waiting_senders(nursery) -> None:
    sender, receiver = _pair()
    chunk = "q" * PIPE_CAPACITY
    outbox = Outbox(sender, limit=sys.getsizeof(chunk))
    nursery.start_soon(outbox.run)
    await trio.testing.wait_all_tasks_blocked()
    outbox.post(chunk)  # fills the peer's inbox, which is not read
    await trio.testing.wait_all_tasks_blocked()
    outbox.post(chunk)  # the writer waits for room with this one in hand
    await trio.testing.wait_all_tasks_blocked()
    failed = trio.Event()

    async def wait_to_send() -> None:
        with pytest.raises(trio.BrokenResourceError):
            await outbox.send(chunk)
        failed.set()

    nursery.start_soon(wait_to_send)
    await trio.testing.wait_all_tasks_blocked()
    await receiver.abort()
    with trio.fail_after(5):
        await failed.wait()


async def test_a_peer_that_does_not_read_fills_the_outbox_not_the_engine(nursery) -> None:
    """Over loopback TCP: once the kernel buffers are full, what is posted stays in the
    outbox, which refuses more past its bounds instead of growing."""
    from iii_trio._ws import Accept, serve_websockets
    from iii_trio._ws._client import connect_websocket

    accepted: trio.MemorySendChannel[object]
    accepted, got = trio.open_memory_channel[object](1)

    async def handler(ws) -> None:
        await accepted.send(ws)
        await trio.sleep_forever()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    nursery.start_soon(
        lambda: serve_websockets(
            lambda request, peer: Accept(handler, max_message_size=1 << 20),
            listeners,
            handler_nursery=nursery,
        )
    )
    client = await connect_websocket(f"ws://127.0.0.1:{port}/", max_message_size=1 << 20)
    server_ws = await got.receive()
    chunk = "w" * 65536
    outbox = Outbox(server_ws, limit=1 << 20, hard_limit=2 << 20)  # type: ignore[arg-type]
    nursery.start_soon(outbox.run)
    refused = 0
    with trio.fail_after(20):
        for _ in range(2000):  # ~130 MB offered; the client never reads
            if not outbox.post(chunk):
                refused += 1
                if refused > 10:
                    break
            await trio.lowlevel.checkpoint()
    assert refused > 10
    assert outbox.queued_bytes <= (2 << 20) + sys.getsizeof(chunk)
    await client.abort()
