"""In-process message sockets (``memory_websocket_pair``): the WebSocket semantics the engine
and the SDK rely on, with objects passed by reference."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from iii_trio._ws import ConnectionClosed, MemoryWebSocket, memory_websocket_pair
from iii_trio._ws._memory import PIPE_CAPACITY


def pair(
    client_max: int = 1 << 20, server_max: int = 1 << 20
) -> tuple[MemoryWebSocket, MemoryWebSocket]:
    return memory_websocket_pair(
        client_max_message_size=client_max, server_max_message_size=server_max
    )


async def test_messages_arrive_in_order_as_the_same_objects() -> None:
    client, server = pair()
    big = bytes(range(256)) * 4096
    whole_view = memoryview(big)
    await client.send_many([b"a", "text", big, whole_view])
    assert await server.receive() == b"a"
    assert await server.receive() == "text"
    assert await server.receive() is big  # no copy
    assert await server.receive() is big  # a view of a whole bytes object is that object


async def test_mutable_buffers_are_copied_at_send() -> None:
    client, server = pair()
    buffer = bytearray(b"before")
    part = memoryview(b"0123456789")[2:5]
    await client.send_many([memoryview(buffer), part])
    buffer[:] = b"after!"
    assert await server.receive() == b"before"
    assert await server.receive() == b"234"


async def test_text_that_is_not_unicode_is_refused_like_a_socket_would() -> None:
    client, _ = pair()
    with pytest.raises(UnicodeEncodeError):
        await client.send("\ud800")


async def test_close_handshake_codes_and_errors() -> None:
    client, server = pair()
    await client.send(b"last")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.close, 4001, "bye")
        assert await server.receive() == b"last"  # data before the Close is delivered
        with pytest.raises(ConnectionClosed) as info:
            await server.receive()
        assert (info.value.code, info.value.reason) == (4001, "bye")
    assert client.closed and server.closed
    # We closed: ClosedResourceError. The peer closed: ConnectionClosed (a BrokenResourceError).
    with pytest.raises(trio.ClosedResourceError):
        await client.receive()
    with pytest.raises(ConnectionClosed):
        await server.send(b"late")


async def test_close_reason_is_cut_like_a_close_frame() -> None:
    client, server = pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.close, 4000, "é" * 100)
        with pytest.raises(ConnectionClosed) as info:
            await server.receive()
    assert len(info.value.reason.encode()) <= 123
    assert info.value.reason == "é" * 61


async def test_close_waits_for_the_echo_and_a_concurrent_receiver_sees_it() -> None:
    client, server = pair()
    seen: list[int] = []

    async def receive_forever() -> None:
        try:
            await client.receive()
        except ConnectionClosed as exc:
            seen.append(exc.code)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive_forever)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(client.close, 1000, "")
        await trio.testing.wait_all_tasks_blocked()
        assert not client.closed  # waiting for the server's echo
        with pytest.raises(ConnectionClosed):
            await server.receive()
    assert seen == [1000]
    assert client.close_info == (1000, "")


async def test_abort_is_a_lost_connection_after_the_data() -> None:
    client, server = pair()
    await client.send(b"x")
    await client.abort()
    assert await server.receive() == b"x"
    with pytest.raises(ConnectionClosed) as info:
        await server.receive()
    assert info.value.code == 1006
    with pytest.raises(trio.ClosedResourceError):
        await client.send(b"y")


async def test_sending_to_a_peer_that_is_gone_fails() -> None:
    client, server = pair()
    await server.abort()
    with pytest.raises(ConnectionClosed) as info:
        await client.send(b"x")
    assert info.value.code == 1006
    assert not client.send_many_nowait([b"x"])


async def test_backpressure_is_counted_in_bytes() -> None:
    client, server = pair()
    chunk = b"x" * (PIPE_CAPACITY // 4)
    for _ in range(4):
        assert client.send_many_nowait([chunk])
    assert not client.send_many_nowait([chunk])  # full: nothing taken
    sent = trio.Event()

    async def send_one() -> None:
        await client.send(chunk)
        sent.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_one)
        await trio.testing.wait_all_tasks_blocked()
        assert not sent.is_set()
        assert await server.receive() is chunk  # room again: the send goes through
        await sent.wait()
    for _ in range(4):
        assert await server.receive() is chunk
    assert not server.receive_buffered


async def test_a_cancelled_blocked_send_sends_nothing() -> None:
    client, server = pair(server_max=PIPE_CAPACITY)
    client.send_many_nowait([b"x" * PIPE_CAPACITY])
    with trio.move_on_after(0.01) as scope:
        await client.send(b"never")
    assert scope.cancelled_caught
    assert await server.receive() == b"x" * PIPE_CAPACITY
    assert not server.receive_buffered


async def test_oversize_message_fails_the_connection_with_1009() -> None:
    client, server = pair(server_max=10)
    assert client.max_send_size == 10
    await client.send(b"ok")
    await client.send(b"x" * 11)
    assert await server.receive() == b"ok"
    with pytest.raises(ConnectionClosed) as info:
        await server.receive()
    assert info.value.code == 1009
    with pytest.raises(ConnectionClosed) as info:
        await client.receive()
    assert info.value.code == 1009


async def test_one_receiver_at_a_time() -> None:
    client, server = pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.receive)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await server.receive()
        await client.send(b"done")


async def test_receive_and_send_are_checkpoints() -> None:
    client, server = pair()
    with trio.testing.assert_checkpoints():
        await client.send(b"x")
    with trio.testing.assert_checkpoints():
        await server.receive()
    await client.abort()
    with trio.testing.assert_checkpoints(), pytest.raises(ConnectionClosed):
        await server.receive()


@given(
    st.lists(
        st.lists(st.one_of(st.binary(max_size=300), st.text(max_size=50)), max_size=8),
        max_size=30,
    ),
    st.sampled_from([1000, 4000, None]),
)
async def test_property_order_and_end(batches: list[list[bytes | str]], end: int | None) -> None:
    """Any batches arrive in order, then exactly the end the sender chose (a Close code, or
    1006 for a sender that went away)."""
    client, server = pair()
    received: list[bytes | str] = []
    async with trio.open_nursery() as nursery:

        async def read() -> None:
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    received.append(await server.receive())
            assert info.value.code == (1006 if end is None else end)

        nursery.start_soon(read)
        with trio.fail_after(10):
            for batch in batches:
                await client.send_many(batch)
            if end is None:
                await client.abort()
            else:
                await client.close(end, "")
    assert received == [m for batch in batches for m in batch]


async def test_receive_hook_takes_messages_only_while_the_receiver_waits() -> None:
    client, server = pair()
    taken: list[str | bytes] = []

    def take(message: str | bytes) -> bool:
        taken.append(message)
        return True

    server.receive_hook = take
    await client.send(b"queued")  # nobody waits in receive: queued, the hook is not asked
    assert taken == []
    assert await server.receive() == b"queued"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.receive)
        await trio.testing.wait_all_tasks_blocked()
        await client.send_many([b"a", b"b"])  # the receiver waits: the hook takes both
        assert taken == [b"a", b"b"]
        assert not server.receive_buffered
        server.receive_hook = None
        await client.send(b"last")  # no hook: the waiting receiver gets it
    assert taken == [b"a", b"b"]
