"""Workers in the engine's process over ``Engine.local_dialer``: in-process message sockets
that the engine routes, authorizes and accounts for as it does sockets.

The rest of the end-to-end suite also runs over this transport:
``IIITRIO_TEST_TRANSPORT=local pytest tests/e2e`` (part of ``nox -s tests``)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import iii_trio
from iii_trio._ws import HandshakeError
from iii_trio.protocol import StreamChannelRef


async def test_channel_data_is_passed_by_reference_in_order() -> None:
    """Chunks arrive as the very objects sent, in order, whether the broker handed them
    straight to the reader or buffered them while the reader was not reading."""
    # More than the reader's queue (32 frames), its socket (1 MiB) and the broker's buffer
    # (64 frames) hold together, so the writer is held back while the reader stalls.
    chunks = [n.to_bytes(2, "big") * (32 << 10) for n in range(200)]
    async with (
        iii_trio.open_engine(port=0) as engine,
        iii_trio.connect_worker(engine.url, dialer=engine.local_dialer) as worker,
        worker.open_channel() as channel,
    ):
        received: list[bytes | bytearray] = []
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:

                async def write() -> None:
                    for piece in chunks:
                        await channel.writer.send_all(piece)
                    await channel.writer.aclose()

                # The reader attaches and takes one chunk, then stalls: the rest fills its
                # socket and then the broker's buffer.
                nursery.start_soon(write)
                received.append(await channel.reader.receive_some())
                await trio.testing.wait_all_tasks_blocked()
                assert engine.statistics().channel_buffered_bytes > 0
                async for piece in channel.reader:
                    received.append(piece)
        assert [r[:2] for r in received] == [c[:2] for c in chunks]  # in order
        assert all(got is sent for got, sent in zip(received, chunks, strict=True))
        await engine.wait_until(lambda e: e.statistics().channels == 0)
        assert engine.statistics().channel_buffered_bytes == 0


async def test_abort_and_reader_close_keep_their_codes() -> None:
    async with (
        iii_trio.open_engine(port=0) as engine,
        iii_trio.connect_worker(engine.url, dialer=engine.local_dialer) as worker,
    ):
        with trio.fail_after(10):
            channel = await worker.create_channel()
            writer = worker.channel_writer(channel.writer_ref)
            reader = worker.channel_reader(channel.reader_ref)
            await writer.send_all(b"partial")
            await writer.abort("disk full", code=4100)
            assert await reader.receive_some() == b"partial"
            with pytest.raises(iii_trio.ChannelAborted) as info:
                await reader.receive_some()
            assert (info.value.code, info.value.reason) == (4100, "disk full")

            channel = await worker.create_channel()
            writer = worker.channel_writer(channel.writer_ref)
            reader = worker.channel_reader(channel.reader_ref)
            await writer.send_all(b"x")
            await reader.aclose()
            with pytest.raises(iii_trio.ChannelReaderClosed):
                while True:
                    await writer.send_all(b"x" * 1000)


async def test_unknown_channel_is_refused_with_404() -> None:
    async with (
        iii_trio.open_engine(port=0) as engine,
        iii_trio.connect_worker(engine.url, dialer=engine.local_dialer) as worker,
    ):
        ref = StreamChannelRef(channel_id="nope", access_key="wrong", direction="read")
        with trio.fail_after(10), pytest.raises(iii_trio.ChannelRefused) as info:
            await worker.channel_reader(ref).receive_some()
        assert info.value.status == 404


async def test_token_is_checked_as_for_sockets() -> None:
    async with iii_trio.open_engine(port=0, token="s3cret") as engine:
        with trio.fail_after(10):
            with pytest.raises(iii_trio.Unauthorized) as info:
                async with iii_trio.connect_worker(
                    engine.url, dialer=engine.local_dialer, reconnect=False
                ):
                    pass
            assert info.value.status == 401
            assert isinstance(info.value.__cause__, HandshakeError)
            async with iii_trio.connect_worker(
                engine.url, dialer=engine.local_dialer, token="s3cret"
            ) as worker:
                worker.register_function("local::double", lambda payload: payload["n"] * 2)
                await engine.wait_function("local::double")
                assert await worker.trigger("local::double", {"n": 21}) == 42


async def test_engine_not_running_refuses_the_connection() -> None:
    async with iii_trio.open_engine(port=0) as engine:
        pass
    with trio.fail_after(10), pytest.raises(iii_trio.EngineUnreachable) as info:
        async with iii_trio.connect_worker(engine.url, dialer=engine.local_dialer, reconnect=False):
            pass
    assert isinstance(info.value.__cause__, ConnectionRefusedError)


async def test_worker_leaving_is_noticed() -> None:
    async with iii_trio.open_engine(port=0) as engine:
        with trio.fail_after(10):
            async with iii_trio.connect_worker(engine.url, dialer=engine.local_dialer) as worker:
                worker.register_function("local::f", lambda payload: None)
                await engine.wait_function("local::f")
                assert len(engine._router.workers) == 1
            await engine.wait_until(lambda e: e.statistics().workers == 0)
            assert engine.statistics().functions == 0
