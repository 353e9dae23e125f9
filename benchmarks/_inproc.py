"""Benchmark 2: a channel with the engine and both ends in one process (embedded use), and
its baseline, a trio memory channel passing the same chunk objects.

usage: python -m benchmarks._inproc {iii-tcp,iii-memory,iii-local,memchan} --size N --chunk N

``iii-tcp`` connects the worker to the engine over loopback TCP; ``iii-memory`` through
``Engine.connect_in_memory`` (WebSocket framing over an in-memory byte stream); ``iii-local``
through ``Engine.local_dialer`` (in-process message sockets), when the library has them.

Prints one JSON line: ``{"event": "result", "elapsed": seconds, "size": ..., ...}``.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import sys
from typing import Any

import trio

import iii_trio

from ._common import Verifier, chunks, emit, now

#: Frames a memory channel may hold: the same as the SDK reader's queue.
MEMCHAN_BUFFER = 32


def in_memory_supported() -> bool:
    """Whether this iii_trio can connect a worker to an engine without sockets."""
    return hasattr(iii_trio.Engine, "connect_in_memory") and (
        "dialer" in inspect.signature(iii_trio.connect_worker).parameters
    )


def local_supported() -> bool:
    """Whether this iii_trio has in-process message sockets (``Engine.local_dialer``)."""
    return in_memory_supported() and hasattr(iii_trio.Engine, "local_dialer")


async def run_iii(size: int, chunk: int, transport: str) -> dict[str, Any]:
    data = chunks(size, chunk)
    verifier = Verifier(chunk)
    async with iii_trio.open_engine(host="127.0.0.1", port=0) as engine:
        options: dict[str, Any] = {}
        if transport == "iii-memory":
            options["dialer"] = engine.connect_in_memory  # type: ignore[attr-defined,unused-ignore]
        elif transport == "iii-local":
            options["dialer"] = engine.local_dialer  # type: ignore[attr-defined,unused-ignore]
        async with (
            iii_trio.connect_worker(
                engine.url, name="bench-inproc", reconnect=False, **options
            ) as worker,
            worker.open_channel() as channel,
        ):
            return await _transfer(channel, data, verifier)


async def _transfer(
    channel: iii_trio.Channel, data: list[bytes], verifier: Verifier
) -> dict[str, Any]:
    async def read() -> None:
        async for piece in channel.reader:
            verifier.feed(piece)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        t0 = now()
        for piece in data:
            await channel.writer.send_all(piece)
        await channel.writer.aclose()
    elapsed = now() - t0
    return {"elapsed": elapsed, **verifier.report()}


async def run_memchan(size: int, chunk: int) -> dict[str, Any]:
    data = chunks(size, chunk)
    verifier = Verifier(chunk)
    send, receive = trio.open_memory_channel[bytes](MEMCHAN_BUFFER)

    async def read() -> None:
        async with receive:
            async for piece in receive:
                verifier.feed(piece)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        t0 = now()
        async with send:
            for piece in data:
                await send.send(piece)
    elapsed = now() - t0
    return {"elapsed": elapsed, **verifier.report()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["iii-tcp", "iii-memory", "iii-local", "memchan"])
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--chunk", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    if args.kind == "memchan":
        result = trio.run(run_memchan, args.size, args.chunk)
    else:
        result = trio.run(run_iii, args.size, args.chunk, args.kind)
    emit({"event": "result", **result})


if __name__ == "__main__":
    main()
