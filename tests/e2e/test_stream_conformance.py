"""trio's own stream conformance checks on channel ends brokered by a real engine: over TCP
on 127.0.0.1, and over in-memory transports to an engine in the same process.

The clogged variant needs a state where ``send_all`` blocks until the reader reads. Over TCP the
kernel cannot be pinned there: it accepts partial frames, and window updates and buffer
autotuning make a full socket writable again with nobody reading (a version that stuffed the
socket directly still failed about one run in seven). Over the lockstep in-memory transport it is
exact: the engine stops reading once its one-frame buffer is full, and a lockstep write waits for
the engine to read. So the clogged variant runs there, through the same broker code."""

from __future__ import annotations

import trio
import trio.testing

import iii_trio


async def test_check_one_way_stream_through_engine(iii_engine, iii_worker) -> None:
    worker = await iii_worker(name="streams")

    async def stream_maker() -> tuple[iii_trio.ChannelWriter, iii_trio.ChannelReader]:
        channel = await worker.create_channel()
        return worker.channel_writer(channel.writer_ref), worker.channel_reader(channel.reader_ref)

    with trio.fail_after(60):
        await trio.testing.check_one_way_stream(stream_maker, None)
    with trio.fail_after(10):
        await iii_engine.wait_until(lambda e: e.statistics().channels == 0)


async def test_check_one_way_stream_in_process(iii_engine) -> None:
    async with iii_trio.connect_worker(
        iii_engine.url, name="in-process", dialer=iii_engine.connect_in_memory
    ) as worker:

        async def stream_maker() -> tuple[iii_trio.ChannelWriter, iii_trio.ChannelReader]:
            channel = await worker.create_channel()
            return worker.channel_writer(channel.writer_ref), worker.channel_reader(
                channel.reader_ref
            )

        with trio.fail_after(60):
            await trio.testing.check_one_way_stream(stream_maker, None)
        with trio.fail_after(10):
            await iii_engine.wait_until(lambda e: e.statistics().channels == 0)


async def test_check_one_way_stream_in_process_clogged(iii_engine) -> None:
    async def lockstep() -> trio.abc.Stream:
        stream: trio.abc.Stream = await iii_engine.connect_in_memory(lockstep=True)
        return stream

    async with iii_trio.connect_worker(iii_engine.url, name="lockstep", dialer=lockstep) as worker:

        async def stream_maker() -> tuple[iii_trio.ChannelWriter, iii_trio.ChannelReader]:
            channel = await worker.create_channel(buffer_size=1)
            return worker.channel_writer(channel.writer_ref), worker.channel_reader(
                channel.reader_ref
            )

        async def clogged_stream_maker() -> tuple[iii_trio.ChannelWriter, iii_trio.ChannelReader]:
            writer, reader = await stream_maker()
            await writer.send_all(b"x")  # fills the engine's one-frame buffer
            await trio.testing.wait_all_tasks_blocked()
            return writer, reader

        with trio.fail_after(60):
            await trio.testing.check_one_way_stream(stream_maker, clogged_stream_maker)
        # Closes cancelled by the checker finish in the background while the worker lives.
        with trio.fail_after(10):
            await iii_engine.wait_until(lambda e: e.statistics().channels == 0)
