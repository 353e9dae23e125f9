"""Hypothesis properties of channel streams through a real engine on 127.0.0.1: order, exact
EOF, and that an abort, a cancellation or a closed reader is never seen as a clean end."""

from __future__ import annotations

from typing import Any

import trio
from hypothesis import given
from hypothesis import strategies as st

import iii_trio

Op = tuple[str, Any]  # ("data", bytes) | ("msg", str)

ops_strategy = st.lists(
    st.one_of(
        st.tuples(st.just("data"), st.binary(max_size=2000)),
        st.tuples(st.just("data"), st.integers(0, 700_000).map(lambda n: bytes([n % 251]) * n)),
        st.tuples(st.just("msg"), st.text(max_size=50)),
    ),
    max_size=12,
)


def _normalize(items: list[Op]) -> list[Op]:
    """Merge adjacent data and drop empty data: what a stream promises to preserve."""
    out: list[Op] = []
    for kind, value in items:
        if kind == "data":
            if not value:
                continue
            if out and out[-1][0] == "data":
                out[-1] = ("data", out[-1][1] + value)
                continue
        out.append((kind, value))
    return out


async def _send_ops(writer: iii_trio.ChannelWriter, ops: list[Op]) -> None:
    for kind, value in ops:
        if kind == "data":
            await writer.send_all(value)
        else:
            await writer.send_message(value)


async def _receive_until_end(
    reader: iii_trio.ChannelReader, sizes: list[int]
) -> tuple[list[Op], BaseException | None]:
    """Everything the reader gets, in order, and how it ended (None = clean EOF). Mixes
    ``receive`` (frames in order) with ``receive_some`` (data only; text messages met on the
    way go to the ``on_message`` callback, in order)."""
    got: list[Op] = []
    reader.on_message(lambda text: got.append(("msg", text)))
    i = 0
    while True:
        try:
            if sizes and i % 2:
                data = await reader.receive_some(sizes[i % len(sizes)])
                item: bytes | str = data
                if data == b"":
                    return got, None
            else:
                item = await reader.receive()
        except trio.EndOfChannel:
            return got, None
        except trio.BrokenResourceError as exc:
            return got, exc
        i += 1
        got.append(("msg", item) if isinstance(item, str) else ("data", item))


@given(ops=ops_strategy, sizes=st.lists(st.integers(1, 100_000), max_size=4))
async def test_everything_arrives_in_order_then_eof(ops: list[Op], sizes: list[int]) -> None:
    async with (
        iii_trio.open_engine(port=0) as engine,
        iii_trio.connect_worker(engine.url) as worker,
    ):
        with trio.fail_after(30):
            channel = await worker.create_channel()
            writer = worker.channel_writer(channel.writer_ref)
            reader = worker.channel_reader(channel.reader_ref)
            async with trio.open_nursery() as nursery:
                outcome: list[Any] = []

                async def read() -> None:
                    outcome.append(await _receive_until_end(reader, sizes))

                nursery.start_soon(read)
                await _send_ops(writer, ops)
                await writer.aclose()
            got, end = outcome[0]
            assert end is None
            assert _normalize(got) == _normalize(ops)
            await reader.aclose()
            await engine.wait_until(lambda e: e.statistics().channels == 0)


@given(
    ops=ops_strategy,
    cut=st.integers(0, 12),
    how=st.sampled_from(["abort", "abort-code", "raise", "cancel"]),
)
async def test_abort_or_cancel_is_never_a_clean_end(ops: list[Op], cut: int, how: str) -> None:
    async with (
        iii_trio.open_engine(port=0) as engine,
        iii_trio.connect_worker(engine.url) as worker,
    ):

        async def produce(payload: dict[str, Any]) -> None:
            # The writer handed to a handler belongs to its invocation: the SDK aborts it
            # when the handler raises or is cancelled.
            writer = payload["writer"]
            await _send_ops(writer, ops[:cut])
            if how == "abort":
                await writer.abort("stopped on purpose")
            elif how == "abort-code":
                await writer.abort("custom", code=4321)
            elif how == "raise":
                raise RuntimeError("handler failed")
            else:
                await trio.sleep_forever()  # cancelled at the call's deadline

        worker.register_function("produce", produce)
        await engine.wait_function("produce")
        with trio.fail_after(30):
            channel = await worker.create_channel()
            reader = worker.channel_reader(channel.reader_ref)
            async with trio.open_nursery() as nursery:
                outcome: list[Any] = []

                async def read() -> None:
                    outcome.append(await _receive_until_end(reader, []))

                nursery.start_soon(read)
                try:
                    await worker.trigger("produce", {"writer": channel.writer_ref}, timeout=0.5)
                except iii_trio.InvocationError:
                    pass
            got, end = outcome[0]
            assert isinstance(end, iii_trio.ChannelAborted), (how, end)
            if how == "abort":
                assert (end.code, end.reason) == (4000, "stopped on purpose")
            elif how == "abort-code":
                assert (end.code, end.reason) == (4321, "custom")
            elif how == "raise":
                assert end.code == 4000 and end.reason == "RuntimeError: handler failed"
            else:
                assert end.code == 4000 and end.reason == "cancelled"
            # Whatever arrived is exactly what was sent before the end.
            assert _normalize(got) == _normalize(ops[:cut])
            await reader.aclose()
            await engine.wait_until(lambda e: e.statistics().channels == 0)


@given(ops=ops_strategy, keep=st.integers(0, 6), forceful=st.booleans())
async def test_reader_leaving_breaks_the_writer(ops: list[Op], keep: int, forceful: bool) -> None:
    async with (
        iii_trio.open_engine(port=0) as engine,
        iii_trio.connect_worker(engine.url) as worker,
    ):
        with trio.fail_after(30):
            channel = await worker.create_channel()
            writer = worker.channel_writer(channel.writer_ref)
            reader = worker.channel_reader(channel.reader_ref)
            async with trio.open_nursery() as nursery:

                async def read_then_leave() -> None:
                    for _ in range(keep):
                        try:
                            await reader.receive()
                        except (trio.EndOfChannel, trio.BrokenResourceError):
                            break
                    if forceful:
                        await trio.aclose_forcefully(reader)
                    else:
                        await reader.aclose()

                nursery.start_soon(read_then_leave)
                broken: BaseException | None = None
                try:
                    await _send_ops(writer, ops)
                    for _ in range(100_000):  # keep writing until the engine tells us
                        await writer.send_all(b"z" * 1000)
                except iii_trio.ChannelReaderClosed as exc:
                    broken = exc
            assert isinstance(broken, iii_trio.ChannelReaderClosed)
            assert broken.code == 4002
            await writer.aclose()
            await engine.wait_until(lambda e: e.statistics().channels == 0)
