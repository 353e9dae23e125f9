"""Engine-wide limits (issue 14): connections and channels capped for the whole engine, the
channel memory bound true with frames of the maximum size, function listings that fit."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import iii_trio
from iii_trio._ws import WebSocket
from tests.helpers import MiB, RawClient, small_window_dialer

LIMIT = 30


async def test_connections_are_capped_engine_wide() -> None:
    """8,000 idle upgraded connections used to be taken without limit. Past the cap new ones
    are refused (503), and the workers already connected keep being served."""
    async with (
        iii_trio.open_engine(port=0, max_connections=4) as engine,
        iii_trio.connect_worker(engine.url, name="healthy") as healthy,
    ):
        healthy.register_function("probe::echo", lambda p: p)
        await healthy.sync()
        clients = [await RawClient.connect(engine.url) for _ in range(3)]
        await engine.wait_until(lambda e: e.statistics().connections == 4)
        with trio.fail_after(LIMIT), pytest.raises(iii_trio.HandshakeRefused) as info:
            async with iii_trio.connect_worker(engine.url, reconnect=False):
                pass  # pragma: no cover - refused
        assert info.value.status == 503
        assert engine.statistics().connections_refused == 1
        with trio.fail_after(LIMIT):
            assert await healthy.trigger("probe::echo", 1) == 1
        await clients.pop().ws.close()
        with trio.fail_after(LIMIT):
            await engine.wait_until(lambda e: e.statistics().connections == 3)
            async with iii_trio.connect_worker(engine.url, reconnect=False) as worker:
                await worker.sync()
        for client in clients:
            await client.ws.abort()


async def test_channels_are_capped_engine_wide_whatever_the_connection() -> None:
    """A reconnect used to reset the per-connection quota: 100,000 unattached channels in
    10 s. The engine-wide cap holds across connections."""
    async with iii_trio.open_engine(port=0, max_channels=3, max_channels_per_worker=2) as engine:
        with trio.fail_after(LIMIT):
            for _ in range(2):  # two connections of two channels would be four
                async with iii_trio.connect_worker(engine.url) as worker:
                    await worker.create_channel()
                    if engine.statistics().channels < 3:
                        await worker.create_channel()
                    else:
                        with pytest.raises(iii_trio.InvocationError) as info:
                            await worker.create_channel()
                        assert info.value.code == "limit_exceeded"
                        assert "max_channels" in info.value.message
        assert engine.statistics().channels == 3


async def test_function_info_is_bounded_and_listings_page() -> None:
    settings: dict[str, Any] = {"max_function_info": 4096, "max_list_answer": 3000}
    async with (
        iii_trio.open_engine(port=0, **settings) as engine,
        iii_trio.connect_worker(engine.url, name="lister") as worker,
    ):
        worker.register_function("big::f", lambda p: p, metadata={"blob": "b" * 5000})
        for n in range(6):
            worker.register_function(f"page::f{n}", lambda p: p, metadata={"m": "x" * 700})
        with trio.fail_after(LIMIT):
            rejection = await worker.wait_rejected("big::f")
            assert rejection.code == "limit_exceeded"
            await worker.sync()
            first = await worker.trigger("engine::functions::list", {"prefix": "page::"})
            listed = [row["function_id"] for row in first["functions"]]
            assert 0 < len(listed) < 6 and first["next"] == listed[-1]
            rest = await worker.trigger(
                "engine::functions::list", {"prefix": "page::", "after": first["next"]}
            )
            listed += [row["function_id"] for row in rest["functions"]]
            while "next" in rest:
                rest = await worker.trigger(
                    "engine::functions::list", {"prefix": "page::", "after": rest["next"]}
                )
                listed += [row["function_id"] for row in rest["functions"]]
        assert listed == [f"page::f{n}" for n in range(6)]
        assert engine.statistics().functions == 6


async def test_a_listing_page_never_splits_one_function_id_across_namespaces() -> None:
    # Rows are sorted by (function id, namespace) and "after" resumes after an id: a page cut
    # between two namespaces of one id would lose the rest of them.
    settings: dict[str, Any] = {"max_list_answer": 1500}  # three rows a page
    async with (
        iii_trio.open_engine(port=0, **settings) as engine,
        iii_trio.connect_worker(engine.url, name="a", namespace="a") as a,
        iii_trio.connect_worker(engine.url, name="b", namespace="b") as b,
    ):
        for worker in (a, b):
            for n in range(4):
                worker.register_function(f"page::f{n}", lambda p: p, metadata={"m": "x" * 150})
        with trio.fail_after(LIMIT):
            await engine.wait_until(lambda e: e.statistics().functions == 8)
            listed: list[tuple[str, str]] = []
            page: dict[str, Any] = {"prefix": "page::"}
            for _ in range(8):  # pages
                answer = await a.trigger("engine::functions::list", page)
                listed += [(row["function_id"], row["namespace"]) for row in answer["functions"]]
                if "next" not in answer:
                    break
                page = {"prefix": "page::", "after": answer["next"]}
            else:
                raise AssertionError("more pages than functions")
        assert sorted(listed) == [(f"page::f{n}", ns) for n in range(4) for ns in ("a", "b")]
        assert len(listed) == 8


async def test_channel_memory_stays_within_its_bound_with_frames_of_the_maximum_size() -> None:
    """Readers that attach and never read, writers pushing frames of ``max_channel_frame``:
    each channel used to hold a frame in the pump's unfinished write plus one more that counted
    as empty again (1,011 MiB against a documented ~614). The bound: the budget plus one frame
    per channel."""
    frame = 1 * MiB
    budget = 4 * MiB
    channels = 10
    settings: dict[str, Any] = {
        # As with the defaults (16 MiB frames, 8 MiB per channel), one frame fills a channel.
        "max_channel_frame": frame,
        "channel_buffer_bytes": frame // 2,
        "channel_memory_limit": budget,
    }
    async with (
        iii_trio.open_engine(port=0, **settings) as engine,
        iii_trio.connect_worker(engine.url, name="bulk") as worker,
    ):
        payload = b"f" * frame
        sockets: list[WebSocket] = []
        async with trio.open_nursery() as nursery:
            for _ in range(channels):
                channel = await worker.create_channel()
                # The reader attaches and never reads; the writer sends frames of the maximum
                # size (a raw socket: the SDK's writer would cut them into 256 KiB frames).
                reader = await RawClient.connect(
                    engine.url,
                    _channel_path(channel.reader_ref),
                    dialer=small_window_dialer(engine.url),
                )
                writer = await RawClient.connect(engine.url, _channel_path(channel.writer_ref))
                sockets += [reader.ws, writer.ws]

                async def push(ws: WebSocket = writer.ws) -> None:
                    while True:
                        await ws.send(payload)

                nursery.start_soon(push)
            with trio.fail_after(LIMIT):
                # Until every writer is held back, the budget fills up.
                await engine.wait_until(lambda e: e.statistics().channel_buffered_bytes >= budget)
                for _ in range(20):
                    await trio.sleep(0.05)  # sleep-ok: let the writers push against the bound
            stats = engine.statistics()
            nursery.cancel_scope.cancel()
        assert stats.channel_buffered_peak <= budget + channels * frame, stats
        for ws in sockets:
            await ws.abort()


def _channel_path(ref: iii_trio.StreamChannelRef) -> str:
    return f"/ws/channels/{ref.channel_id}?key={ref.access_key}&dir={ref.direction}"


async def test_silent_telemetry_connections_are_dropped_by_the_keepalive() -> None:
    """``/otel`` sockets were never timed out; now they are pinged like worker connections."""
    async with iii_trio.open_engine(port=0, ping_interval=0.2, ping_timeout=0.5) as engine:
        silent = await RawClient.connect(
            engine.url, "/otel", dialer=small_window_dialer(engine.url)
        )
        # It never reads, so it never answers a ping: the engine drops it.
        with trio.fail_after(LIMIT):
            await engine.wait_until(lambda e: e.statistics().connections == 0)
        await silent.ws.abort()
