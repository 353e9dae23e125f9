"""The SDK at its boundaries (issue 13): errors leave our context managers as themselves,
remote errors name their cause, deadlines follow stream progress, streaming calls cannot
deadlock."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import trio

import iii_trio

LIMIT = 30


def _plain(exc: BaseException) -> None:
    assert not isinstance(exc, BaseExceptionGroup), repr(exc)


# --- 1. errors leave our context managers as themselves ----------------------------------


async def test_a_remote_error_in_the_block_is_caught_by_its_own_class(iii_engine) -> None:
    with trio.fail_after(LIMIT), pytest.raises(iii_trio.FunctionNotFound) as info:
        async with iii_trio.connect_worker(iii_engine.url) as worker:
            await worker.trigger("nosuch::fn", {})
    _plain(info.value)


async def test_a_plain_exception_in_the_block_is_itself(iii_engine) -> None:
    with trio.fail_after(LIMIT), pytest.raises(ValueError, match="mine") as info:
        async with iii_trio.connect_worker(iii_engine.url):
            raise ValueError("mine")
    _plain(info.value)
    assert info.value.__context__ is None  # not the nursery's group


async def test_keyboard_interrupt_stays_itself(iii_engine) -> None:
    with trio.fail_after(LIMIT), pytest.raises(KeyboardInterrupt) as info:
        async with iii_trio.connect_worker(iii_engine.url):
            raise KeyboardInterrupt
    _plain(info.value)


async def test_open_channel_and_streaming_blocks_pass_errors_through(iii_worker) -> None:
    worker = await iii_worker()
    with trio.fail_after(LIMIT):
        with pytest.raises(RuntimeError, match="in the block") as info:
            async with worker.open_channel():
                raise RuntimeError("in the block")
        _plain(info.value)
        with pytest.raises(iii_trio.FunctionNotFound) as not_found:
            async with worker.stream_to("nosuch::fn") as call:
                await call.writer.send_all(b"x")
                await trio.sleep_forever()  # cancelled: the call failed
        _plain(not_found.value)


async def test_open_engine_errors_are_themselves() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with trio.fail_after(LIMIT), pytest.raises(OSError) as info:
            async with iii_trio.open_engine(port=port):
                pass  # pragma: no cover - never reached
    _plain(info.value)
    with trio.fail_after(LIMIT), pytest.raises(LookupError) as body:
        async with iii_trio.open_engine(port=0):
            raise LookupError("body")
    _plain(body.value)


# --- 2. remote errors name their cause -------------------------------------------------


async def test_a_handler_failing_in_a_nursery_is_named_by_its_leaf(iii_worker) -> None:
    server = await iii_worker(name="server")
    client = await iii_worker(name="client")
    aborted: list[str] = []

    async def stage(payload: Any) -> None:
        async def disk() -> None:
            raise RuntimeError("disk on fire")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(disk)
            await trio.sleep_forever()

    async def consume(payload: Any) -> None:
        try:
            await payload["reader"].read_all()
        except iii_trio.ChannelAborted as exc:
            aborted.append(exc.reason)
            raise

    async def stage_with_channel(payload: Any) -> None:
        async with trio.open_nursery() as nursery:
            await payload["writer"].send_all(b"partial")

            async def disk() -> None:
                raise OSError("no space left")

            nursery.start_soon(disk)

    server.register_function("stage::plain", stage)
    server.register_function("stage::consume", consume)
    server.register_function("stage::write", stage_with_channel)
    await server.sync()
    with trio.fail_after(LIMIT):
        with pytest.raises(iii_trio.InvocationFailed) as info:
            await client.trigger("stage::plain", {})
        assert info.value.message == "RuntimeError: disk on fire"
        assert "disk on fire" in (info.value.stacktrace or "")
        with pytest.raises(iii_trio.InvocationFailed) as written:
            async with client.stream_from("stage::write") as call:
                await call.reader.read_all()
        assert written.value.message == "OSError: no space left"
        _plain(written.value)
        # The reader saw the abort first (then it is the cause), or the call's answer came
        # first and the block was cancelled: either way the call's error is what leaves.
        cause = written.value.__cause__
        assert cause is None or (
            isinstance(cause, iii_trio.ChannelAborted) and cause.reason == "OSError: no space left"
        )


# --- 3. deadlines follow progress on streams ----------------------------------------------


async def test_a_long_steady_transfer_outlives_a_short_timeout(iii_worker) -> None:
    """A 3 s deadline, a transfer that runs about 8 s at a steady pace: it succeeds."""
    server = await iii_worker(name="slow-consumer")
    client = await iii_worker(name="client")

    async def slow_store(payload: Any) -> int:
        total = 0
        async for chunk in payload["reader"]:
            total += len(chunk)
            await trio.sleep(0.5)  # sleep-ok: the consumer's pace is the point of the test
        return total

    server.register_function("files::slow_store", slow_store)
    await server.sync()
    start = trio.current_time()
    with trio.fail_after(LIMIT):
        async with client.stream_to("files::slow_store", timeout=3, buffer_size=1) as call:
            for _ in range(16):
                await call.writer.send_all(b"z" * 1024)
                await trio.sleep(0.5)  # sleep-ok: a steady producer, one chunk per 0.5 s
    assert call.result == 16 * 1024
    assert trio.current_time() - start > 7


async def test_a_long_steady_download_outlives_a_short_timeout(iii_worker) -> None:
    server = await iii_worker(name="slow-producer")
    client = await iii_worker(name="client")

    async def slow_export(payload: Any) -> str:
        for _ in range(16):
            await payload["writer"].send_all(b"q" * 512)
            await trio.sleep(0.5)  # sleep-ok: a steady producer is the point of the test
        return "done"

    server.register_function("files::slow_export", slow_export)
    await server.sync()
    with trio.fail_after(LIMIT):
        async with client.stream_from("files::slow_export", timeout=3) as call:
            data = await call.reader.read_all()
    assert len(data) == 16 * 512 and call.result == "done"


async def test_a_stalled_stream_fails_promptly_saying_it_stalled(iii_worker) -> None:
    server = await iii_worker(name="stuck")
    client = await iii_worker(name="client")

    async def stuck(payload: Any) -> None:
        await payload["reader"].receive_some()
        await trio.sleep_forever()  # stops reading: the stream stalls

    server.register_function("files::stuck", stuck)
    await server.sync()
    start = trio.current_time()
    with trio.fail_after(LIMIT), pytest.raises(iii_trio.InvocationTimeout) as info:
        async with client.stream_to("files::stuck", timeout=2) as call:
            await call.writer.send_all(b"first")
            await trio.sleep_forever()  # the writer idles too: no progress anywhere
    elapsed = trio.current_time() - start
    assert "stalled" in info.value.message
    assert elapsed < 2 + 1.5, elapsed


# --- 4. a streaming call that cannot deadlock ------------------------------------------------


async def test_stream_to_ends_the_stream_before_awaiting_the_result(iii_worker) -> None:
    """The README's old pattern hung: the call waited for end of stream, which only came
    after the call. stream_to orders them."""
    server = await iii_worker(name="server")
    client = await iii_worker(name="client")

    async def count(payload: Any) -> dict[str, Any]:
        data = await payload["reader"].read_all()
        return {"size": len(data), "name": payload["name"]}

    server.register_function("files::count", count)
    await server.sync()
    with trio.fail_after(LIMIT):
        async with client.stream_to("files::count", {"name": "x"}) as call:
            await call.writer.send_all(b"a" * 100_000)
    assert call.result == {"size": 100_000, "name": "x"}


async def test_an_exception_in_the_block_aborts_the_stream(iii_worker) -> None:
    server = await iii_worker(name="server")
    client = await iii_worker(name="client")
    seen = trio.Event()
    reasons: list[str] = []

    async def count(payload: Any) -> int:
        try:
            return len(await payload["reader"].read_all())
        except iii_trio.ChannelAborted as exc:
            reasons.append(exc.reason)
            raise
        finally:
            seen.set()

    server.register_function("files::count", count)
    await server.sync()
    with trio.fail_after(LIMIT):
        with pytest.raises(ZeroDivisionError):
            async with client.stream_to("files::count") as call:
                await call.writer.send_all(b"half")
                raise ZeroDivisionError("bad data")
        await seen.wait()
    assert reasons == ["ZeroDivisionError: bad data"]
    with pytest.raises(RuntimeError):
        _ = call.result
    with pytest.raises(ValueError, match="already has 'reader'"):
        async with client.stream_to("files::count", {"reader": 1}):
            pass  # pragma: no cover - refused before the block
