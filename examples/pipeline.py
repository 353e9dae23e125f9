"""Pipeline: producer -> transform -> consumer, three workers, two channels.

    iii-trio engine &
    python examples/pipeline.py

The coordinator creates two channels and starts three functions on three workers: the
producer writes numbers into channel A, the transformer reads A and writes squares into
channel B, the consumer sums B. Bytes flow through the engine the whole time, with
backpressure: no stage holds more than the engine's per-channel buffer.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

import trio

import iii_trio

sys.path.insert(0, os.path.dirname(__file__))
from _common import engine_url

COUNT = 100_000


async def produce(payload: dict[str, object]) -> int:
    writer = payload["out"]
    assert isinstance(writer, iii_trio.ChannelWriter)
    for start in range(0, COUNT, 1000):
        await writer.send_all("".join(f"{n}\n" for n in range(start, start + 1000)).encode())
    return COUNT


async def transform(payload: dict[str, object]) -> int:
    reader, writer = payload["in"], payload["out"]
    assert isinstance(reader, iii_trio.ChannelReader) and isinstance(writer, iii_trio.ChannelWriter)
    rest = b""
    lines = 0
    async for chunk in reader:
        *complete, rest = (rest + chunk).split(b"\n")
        lines += len(complete)
        await writer.send_all(b"".join(b"%d\n" % (int(n) ** 2) for n in complete))
    return lines


async def consume(payload: dict[str, object]) -> int:
    reader = payload["in"]
    assert isinstance(reader, iii_trio.ChannelReader)
    data = await reader.read_all()
    return sum(int(n) for n in data.split())


async def main(url: str) -> None:
    async with (
        iii_trio.connect_worker(url, name="producer") as producer,
        iii_trio.connect_worker(url, name="transformer") as transformer,
        iii_trio.connect_worker(url, name="consumer") as consumer,
        iii_trio.connect_worker(url, name="coordinator") as coordinator,
    ):
        producer.register_function("pipe::produce", produce)
        transformer.register_function("pipe::transform", transform)
        consumer.register_function("pipe::consume", consume)
        for worker in (producer, transformer, consumer):
            await worker.sync()  # the engine has each registration before anyone calls
        a = await coordinator.create_channel()
        b = await coordinator.create_channel()
        results: dict[str, int] = {}

        async def run(name: str, payload: Mapping[str, object]) -> None:
            results[name] = await coordinator.trigger(f"pipe::{name}", payload, timeout=60)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "consume", {"in": b.reader_ref})
            nursery.start_soon(run, "transform", {"in": a.reader_ref, "out": b.writer_ref})
            nursery.start_soon(run, "produce", {"out": a.writer_ref})
    expected = sum(n * n for n in range(COUNT))
    print(
        f"produced {results['produce']}, transformed {results['transform']}, sum {results['consume']}"
    )
    if results["consume"] != expected or results["transform"] != COUNT:
        raise SystemExit(1)


if __name__ == "__main__":
    trio.run(main, engine_url(__doc__ or ""))
