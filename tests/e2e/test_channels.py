"""Channel semantics through a real engine on 127.0.0.1: attachment rules, end states,
bounded buffering, expiry, faults in other processes, file helpers."""

from __future__ import annotations

import gc
import json
import os
import signal

import pytest
import trio

import iii_trio
from iii_trio._ws import HandshakeError, connect_websocket
from iii_trio.engine._broker import BrokeredChannel
from iii_trio.protocol import unstructure_ref
from tests.e2e.procs import worker_process


async def _no_channels(engine: iii_trio.Engine) -> None:
    with trio.fail_after(10):
        await engine.wait_until(lambda e: e.statistics().channels == 0)


async def test_second_attach_is_refused_with_409(iii_engine, iii_worker) -> None:
    worker = await iii_worker()
    channel = await worker.create_channel()
    first = worker.channel_reader(channel.reader_ref)
    writer = worker.channel_writer(channel.writer_ref)
    with trio.fail_after(10):
        await writer.send_all(b"data")
        assert await first.receive_some() == b"data"
        second = worker.channel_reader(channel.reader_ref)
        with pytest.raises(iii_trio.ChannelRefused) as info:
            await second.receive_some()
        assert info.value.status == 409 and "already attached" in str(info.value)
        # ...and the first reader is untouched.
        await writer.send_all(b"more")
        assert await first.receive_some() == b"more"
        await writer.aclose()
        assert await first.receive_some() == b""
    await _no_channels(iii_engine)


async def test_unknown_channel_or_wrong_key_is_404_before_upgrade(iii_engine, iii_worker) -> None:
    worker = await iii_worker()
    channel = await worker.create_channel()
    base = iii_engine.url
    cid = channel.reader_ref.channel_id
    cases = {
        f"/ws/channels/{cid}?key=wrong&dir=read": 404,
        "/ws/channels/nope?key=x&dir=read": 404,
        # each end has its own key: the reader's key does not open the write end
        f"/ws/channels/{cid}?key={channel.reader_ref.access_key}&dir=write": 404,
        f"/ws/channels/{cid}?dir=read": 400,
        f"/ws/channels/{cid}?key=x&dir=sideways": 400,
    }
    for path, status in cases.items():
        with trio.fail_after(10), pytest.raises(HandshakeError) as info:
            await connect_websocket(base + path, max_message_size=1024)
        assert info.value.status == status, path
    # Nothing was consumed by the failed attempts.
    reader = worker.channel_reader(channel.reader_ref)
    writer = worker.channel_writer(channel.writer_ref)
    with trio.fail_after(10):
        await writer.send_all(b"ok")
        await writer.aclose()
        assert await reader.read_all() == b"ok"


async def test_writer_closed_before_it_ever_connected_still_ends_the_stream(
    iii_engine, iii_worker
) -> None:
    worker = await iii_worker()
    channel = await worker.create_channel()
    writer = worker.channel_writer(channel.writer_ref)
    reader = worker.channel_reader(channel.reader_ref)
    with trio.fail_after(10):
        await writer.aclose()  # iii's SDKs send nothing here and the reader hangs for minutes
        assert await reader.read_all() == b""
    await _no_channels(iii_engine)


async def test_data_written_before_the_reader_attaches_survives_the_close(
    iii_engine, iii_worker
) -> None:
    producer = await iii_worker(name="producer")
    consumer = await iii_worker(name="consumer")
    channel = await producer.create_channel()
    data = os.urandom(3 * 1024 * 1024)
    with trio.fail_after(20):
        await channel.writer.send_message("before")
        await channel.writer.send_all(data)
        await channel.writer.aclose()
        reader = consumer.channel_reader(unstructure_ref(channel.reader_ref))
        messages: list[str] = []
        reader.on_message(messages.append)
        assert await reader.read_all() == data
        assert messages == ["before"]
    await _no_channels(iii_engine)


async def test_writer_abort_reaches_the_reader_with_code_and_reason(iii_engine, iii_worker) -> None:
    worker = await iii_worker()
    async with worker.open_channel() as channel:
        with trio.fail_after(10):
            await channel.writer.send_all(b"partial")
            await channel.writer.abort("disk full", code=4507)
            assert await channel.reader.receive_some() == b"partial"
            with pytest.raises(iii_trio.ChannelAborted) as info:
                await channel.reader.receive_some()
            assert (info.value.code, info.value.reason) == (4507, "disk full")
            # and it stays broken
            with pytest.raises(iii_trio.ChannelAborted):
                await channel.reader.receive_some()
    await _no_channels(iii_engine)


async def test_open_channel_block_aborts_on_error(iii_engine, iii_worker) -> None:
    server = await iii_worker(name="server")
    seen: list[str] = []
    done = trio.Event()

    async def consume(payload):
        try:
            await payload["reader"].read_all()
            seen.append("clean end")
        except iii_trio.ChannelAborted as exc:
            seen.append(exc.reason)
        done.set()

    server.register_function("consume", consume)
    await iii_engine.wait_function("consume")
    client = await iii_worker(name="client")
    with trio.fail_after(10):
        # The block's own exception leaves it as itself (issue 13), not in a group.
        with pytest.raises(ValueError, match="bad input") as info:
            async with client.open_channel() as channel:
                await client.trigger("consume", {"reader": channel.reader_ref}, action="void")
                await channel.writer.send_all(b"half")
                raise ValueError("bad input")
        assert not isinstance(info.value, BaseExceptionGroup)
        await done.wait()
    assert seen == ["ValueError: bad input"]
    await _no_channels(iii_engine)


async def test_reader_leaving_closes_an_idle_writer_promptly(iii_engine, iii_worker) -> None:
    worker = await iii_worker()
    channel = await worker.create_channel()
    writer = worker.channel_writer(channel.writer_ref)
    reader = worker.channel_reader(channel.reader_ref)
    with trio.fail_after(10):
        await writer.send_all(b"x")
        assert await reader.receive_some() == b"x"
        await reader.abort("not interested")
        # the writer is idle; the engine still tells it, and the SDK notices without a write
        with pytest.raises(iii_trio.ChannelReaderClosed) as info:
            while True:
                await writer.wait_send_all_might_not_block()
                await trio.sleep(0)  # let the watcher run; bounded by fail_after
        assert info.value.code == 4002 and info.value.reason == "not interested"
    await _no_channels(iii_engine)


async def test_writer_connection_lost_is_not_a_clean_end(iii_engine, iii_worker) -> None:
    worker = await iii_worker()
    channel = await worker.create_channel()
    raw = await connect_websocket(
        f"{iii_engine.url}/ws/channels/{channel.writer_ref.channel_id}?key={channel.writer_ref.access_key}&dir=write",
        max_message_size=1024,
    )
    reader = worker.channel_reader(channel.reader_ref)
    with trio.fail_after(10):
        await raw.send(b"abc")
        await raw.abort()  # TCP drop, no Close frame
        assert await reader.receive_some() == b"abc"
        with pytest.raises(iii_trio.ChannelLost) as info:
            await reader.receive_some()
        assert info.value.code == 4001
    await _no_channels(iii_engine)


async def test_buffering_is_bounded_in_bytes() -> None:
    limit = 256 * 1024
    async with iii_trio.open_engine(port=0, channel_buffer_bytes=limit) as engine:
        async with iii_trio.connect_worker(engine.url) as worker:
            channel = await worker.create_channel(buffer_size=1024)
            writer = worker.channel_writer(channel.writer_ref)
            peak = 0
            async with trio.open_nursery() as nursery:

                async def write_lots() -> None:
                    for _ in range(400):  # 100 MiB if nothing pushed back
                        await writer.send_all(b"b" * (256 * 1024))

                nursery.start_soon(write_lots)
                for _ in range(20):
                    await trio.testing.wait_all_tasks_blocked()
                    state = engine._broker.channels[channel.writer_ref.channel_id]
                    peak = max(peak, state.buffered_bytes)
                # The writer is stuck: the engine stopped reading at the byte limit (plus at
                # most one frame), the rest sits in kernel buffers.
                assert 0 < peak <= limit + 256 * 1024
                assert writer.bytes_sent < 100 * 1024 * 1024
                reader = worker.channel_reader(channel.reader_ref)
                received = 0
                with trio.fail_after(60):
                    while received < 400 * 256 * 1024:
                        received += len(await reader.receive_some())
                        peak = max(
                            peak,
                            engine._broker.channels[channel.writer_ref.channel_id].buffered_bytes,
                        )
                assert peak <= limit + 256 * 1024
            await writer.aclose()
            with trio.fail_after(10):
                assert await reader.receive_some() == b""


async def test_all_channels_share_one_memory_limit() -> None:
    """Many stalled channels cannot add up past ``channel_memory_limit`` (+ one frame each),
    and a channel whose reader reads still streams while every other channel is stalled."""
    limit, frame, count, frames_each = 1024 * 1024, 64 * 1024, 8, 64
    async with iii_trio.open_engine(
        port=0, channel_buffer_bytes=8 * 1024 * 1024, channel_memory_limit=limit
    ) as engine:
        async with iii_trio.connect_worker(engine.url) as worker:
            channels = [await worker.create_channel(buffer_size=1024) for _ in range(count)]
            writers = [worker.channel_writer(c.writer_ref) for c in channels]

            async def write(index: int) -> None:
                for n in range(frames_each):  # 4 MiB per channel, 32 MiB in all
                    await writers[index].send_all(bytes([index]) * (frame - 1) + bytes([n]))
                await writers[index].aclose()

            def held() -> list[int]:
                return [c.buffered_bytes for c in engine._broker.channels.values()]

            async with trio.open_nursery() as nursery:
                for index in range(count):
                    nursery.start_soon(write, index)
                for _ in range(20):
                    await trio.testing.wait_all_tasks_blocked()
                # Everyone is stalled: the engine holds the shared limit, plus at most one frame
                # per channel, and every channel got at least its first frame in.
                assert limit <= sum(held()) <= limit + count * frame
                assert all(size >= frame for size in held())
                assert engine.statistics().channel_buffered_bytes == sum(held())
                # Drain the channels one by one, last first: each completes although the others
                # stay stalled with the shared budget spent.
                with trio.fail_after(60):
                    for index in reversed(range(count)):
                        reader = worker.channel_reader(channels[index].reader_ref)
                        data = await reader.read_all()
                        assert len(data) == frames_each * frame
                        for n in range(frames_each):
                            chunk = data[n * frame : (n + 1) * frame]
                            assert chunk == bytes([index]) * (frame - 1) + bytes([n])
                        assert sum(held()) <= limit + count * frame
            assert engine.statistics().channel_buffered_peak <= limit + count * frame
            await engine.wait_until(lambda e: e.statistics().channels == 0)
            assert engine.statistics().channel_buffered_bytes == 0


async def test_finished_channels_are_not_retained() -> None:
    """The engine forgets channels once they end (no history grows with traffic)."""
    async with iii_trio.open_engine(port=0) as engine:
        async with iii_trio.connect_worker(engine.url, dialer=engine.connect_in_memory) as worker:
            with trio.fail_after(60):
                for n in range(300):
                    channel = await worker.create_channel()
                    writer = worker.channel_writer(channel.writer_ref)
                    reader = worker.channel_reader(channel.reader_ref)
                    await writer.send_all(b"%d" % n)
                    await writer.aclose()
                    assert await reader.read_all() == b"%d" % n
                await engine.wait_until(lambda e: e.statistics().channels == 0)
            gc.collect()
            alive = sum(isinstance(o, BrokeredChannel) for o in gc.get_objects())
            assert alive <= 100, f"{alive} finished channels still referenced"


async def test_unattached_ends_expire() -> None:
    async with iii_trio.open_engine(port=0, channel_ttl=0.3) as engine:
        async with iii_trio.connect_worker(engine.url) as worker:
            with trio.fail_after(10):
                # only a writer: it is told the reader never came
                lonely = await worker.create_channel()
                writer = worker.channel_writer(lonely.writer_ref)
                await writer.send_all(b"anyone?")
                with pytest.raises(iii_trio.ChannelExpired) as info:
                    while True:
                        await writer.wait_send_all_might_not_block()
                        await trio.sleep(0.01)
                assert info.value.code == 4004
                # only a reader: it gets an error, not a clean end
                waiting = await worker.create_channel()
                reader = worker.channel_reader(waiting.reader_ref)
                with pytest.raises(iii_trio.ChannelExpired):
                    await reader.receive_some()
                # nobody at all: just removed
                await worker.create_channel()
                await engine.wait_until(lambda e: e.statistics().channels == 0)
                # and a late attach is refused
                late = worker.channel_reader(lonely.reader_ref)
                with pytest.raises(iii_trio.ChannelRefused) as refused:
                    await late.receive_some()
                assert refused.value.status == 404


async def test_channels_list_shows_live_channels(iii_engine, iii_worker) -> None:
    worker = await iii_worker()
    async with worker.open_channel() as channel:
        with trio.fail_after(10):
            await channel.writer.send_all(b"12345")
            assert await channel.reader.receive_some() == b"12345"
            listed = await worker.trigger("engine::channels::list", {})
            (row,) = listed["channels"]
            assert row["channel_id"] == channel.writer_ref.channel_id
            assert row["state"] == "streaming" and row["bytes_in"] == 5 and row["bytes_out"] == 5
            assert "access_key" not in json.dumps(
                row
            ) and channel.writer_ref.access_key not in json.dumps(row)
    await _no_channels(iii_engine)


async def test_refs_nested_anywhere_become_live_ends(iii_engine, iii_worker) -> None:
    server = await iii_worker(name="server")

    async def fan_out(payload):
        outs = payload["targets"]["list"]
        for i, writer in enumerate(outs):
            assert isinstance(writer, iii_trio.ChannelWriter)
            await writer.send_all(f"part {i}".encode())
        return len(outs)

    server.register_function("fan_out", fan_out)
    await iii_engine.wait_function("fan_out")
    client = await iii_worker(name="client")
    channels = [await client.create_channel() for _ in range(3)]
    with trio.fail_after(10):
        count = await client.trigger(
            "fan_out", {"targets": {"list": [c.writer_ref for c in channels]}}
        )
        assert count == 3
        for i, channel in enumerate(channels):
            assert await channel.reader.read_all() == f"part {i}".encode()
    await _no_channels(iii_engine)


async def test_creator_disconnect_does_not_break_channels_held_by_others(
    iii_engine, iii_worker
) -> None:
    a = await iii_worker(name="a")
    b = await iii_worker(name="b")
    async with iii_trio.connect_worker(iii_engine.url, name="creator") as creator:
        channel = await creator.create_channel()
    # the creator is gone; the ends still work for others
    writer = a.channel_writer(channel.writer_ref)
    reader = b.channel_reader(channel.reader_ref)
    with trio.fail_after(10):
        await writer.send_all(b"still here")
        await writer.aclose()
        assert await reader.read_all() == b"still here"
    await _no_channels(iii_engine)


async def test_file_helpers_with_progress(iii_engine, iii_worker, tmp_path) -> None:
    source = tmp_path / "in.bin"
    target = tmp_path / "out.bin"
    data = os.urandom(2 * 1024 * 1024 + 17)
    source.write_bytes(data)
    server = await iii_worker(name="server")

    async def store(payload):
        seen = []
        size = await iii_trio.receive_file(
            payload["reader"], target, progress=lambda n, t: seen.append(n)
        )
        return {"size": size, "steps": len(seen), "last": seen[-1]}

    server.register_function("store", store)
    await iii_engine.wait_function("store")
    client = await iii_worker(name="client")
    sent_progress = []
    with trio.fail_after(20):
        async with client.open_channel() as channel, trio.open_nursery() as nursery:
            result = {}

            async def call() -> None:
                result["r"] = await client.trigger("store", {"reader": channel.reader_ref})

            nursery.start_soon(call)
            await iii_trio.send_file(
                source, channel.writer, progress=lambda n, t: sent_progress.append((n, t))
            )
    assert target.read_bytes() == data
    assert result["r"]["size"] == len(data) and result["r"]["last"] == len(data)
    assert sent_progress[-1] == (len(data), len(data))


async def test_receive_file_removes_a_partial_file(iii_engine, iii_worker, tmp_path) -> None:
    worker = await iii_worker()
    target = tmp_path / "partial.bin"
    async with worker.open_channel() as channel:
        with trio.fail_after(10):
            await channel.writer.send_all(b"half of it")
            await channel.writer.abort("source vanished")
            with pytest.raises(iii_trio.ChannelAborted):
                await iii_trio.receive_file(channel.reader, target)
    assert not target.exists()


# --- faults in other processes ---------------------------------------------------------------


async def test_writer_process_killed_mid_stream(iii_engine, iii_worker) -> None:
    worker = await iii_worker()
    channel = await worker.create_channel()
    reader = worker.channel_reader(channel.reader_ref)
    ref = json.dumps(unstructure_ref(channel.writer_ref))
    async with worker_process(iii_engine.url, "write", ref) as (proc, ready):
        assert ready["event"] == "writing"
        with trio.fail_after(10):
            assert await reader.receive_some()
            os.kill(proc.pid, signal.SIGKILL)
            with pytest.raises(iii_trio.ChannelLost) as info:
                while True:
                    await reader.receive_some()
        assert info.value.code == 4001
    await _no_channels(iii_engine)


async def test_reader_process_killed_mid_stream(iii_engine, iii_worker) -> None:
    worker = await iii_worker()
    channel = await worker.create_channel()
    writer = worker.channel_writer(channel.writer_ref)
    ref = json.dumps(unstructure_ref(channel.reader_ref))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.send_all, b"r" * 65536)
        async with worker_process(iii_engine.url, "read", ref) as (proc, ready):
            assert ready["event"] == "reading"
            os.kill(proc.pid, signal.SIGKILL)
            with trio.fail_after(10), pytest.raises(iii_trio.ChannelBroken) as info:
                while True:
                    await writer.send_all(b"r" * 65536)
            assert info.value.code == 4003  # reader lost
    await writer.aclose()
    await _no_channels(iii_engine)
