"""Workers built on iii_trio's SDK, driven by the harness through stdin/stdout JSON lines.

usage: python -m benchmarks._trio_peer ROLE --url URL [options]

* ``serve``: serves ``bench::sink`` (reads a channel to its end, checking the data; optional
  ``rate`` in MB/s makes it a slow reader) and ``bench::echo`` (~100-byte JSON answer).
* ``client``: answers commands: ``transfer`` (one channel to ``bench::sink``), ``many``
  (many channels at once), ``latency`` (sequential calls), ``throughput`` (calls with N in
  flight).
* ``swarm``: on ``go``, connects ``--workers`` workers that each register ``--functions``
  functions, then calls one function of each through the engine to be sure the engine has
  them all.

Every role prints ``{"event": "ready"}`` first and stops at EOF on stdin.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from typing import TYPE_CHECKING, Any

import trio

import iii_trio

from ._common import Verifier, chunks, emit, now
from ._raw import latency_summary

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

PAYLOAD_TEXT = "benchmark payload of about one hundred bytes"


async def stdin_lines() -> AsyncIterator[str]:
    """Lines from stdin without blocking the event loop; ends at EOF."""
    stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    buffer = b""
    async with stream:
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                yield line.decode()


async def wait_stdin_eof() -> None:
    async for _ in stdin_lines():
        pass


# --- serve ---------------------------------------------------------------------------------


async def sink(data: dict[str, Any]) -> dict[str, Any]:
    reader: iii_trio.ChannelReader = data["reader"]
    verifier = Verifier(int(data["chunk"]))
    rate = float(data.get("rate") or 0) * 1e6
    start = now()
    async for piece in reader:
        verifier.feed(piece)
        if rate:
            ahead = start + verifier.size / rate - now()
            if ahead > 0:
                await trio.sleep(ahead)  # sleep-ok: a deliberately slow reader
    return {"t_eof": now(), **verifier.report()}


async def echo(data: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, "echo": data["msg"]}


async def probe(worker: iii_trio.Worker, function_id: str, payload: Any) -> int:
    """Call ``function_id`` until the engine knows it (registrations are not acknowledged);
    returns how many calls failed with FunctionNotFound first."""
    misses = 0
    with trio.fail_after(30):
        while True:
            try:
                await worker.trigger(function_id, payload)
                return misses
            except iii_trio.FunctionNotFound:
                misses += 1
                await trio.sleep(0.01)  # sleep-ok: bounded retry of a readiness probe


async def serve(args: argparse.Namespace) -> None:
    async with iii_trio.connect_worker(args.url, name="bench-serve", reconnect=False) as worker:
        worker.register_function("bench::sink", sink)
        worker.register_function("bench::echo", echo)
        misses = await probe(worker, "bench::echo", {"msg": "ready"})
        emit({"event": "ready", "probe_misses": misses})
        await wait_stdin_eof()


# --- client --------------------------------------------------------------------------------


async def transfer(worker: iii_trio.Worker, cmd: dict[str, Any]) -> dict[str, Any]:
    size, chunk = int(cmd["size"]), int(cmd["chunk"])
    data = chunks(size, chunk)
    channel = await worker.create_channel()
    payload = {"reader": channel.reader_ref, "chunk": chunk, "rate": cmd.get("rate", 0)}
    result: dict[str, Any] = {}

    async def call() -> None:
        result.update(await worker.trigger(cmd["fn"], payload, timeout=cmd["timeout"]))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call)
        writer = channel.writer
        t0 = now()
        for piece in data:
            await writer.send_all(piece)
        await writer.aclose()
        t_sent = now()
    return {"t0": t0, "t_sent": t_sent, **result}


async def many(worker: iii_trio.Worker, cmd: dict[str, Any]) -> dict[str, Any]:
    count = int(cmd["channels"])
    outcomes: list[dict[str, Any]] = []
    failures: dict[str, int] = {}
    t0 = now()
    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(_one_of_many, worker, cmd, outcomes, failures)
    elapsed = now() - t0
    return {
        "elapsed": elapsed,
        "channels": len(outcomes),
        "failures": failures,
        "size": sum(o["size"] for o in outcomes),
        "checked": sum(o["checked"] for o in outcomes),
        "mismatches": sum(o["mismatches"] for o in outcomes),
        "bad_sizes": sum(o["size"] != int(cmd["size"]) for o in outcomes),
    }


async def _one_of_many(
    worker: iii_trio.Worker,
    cmd: dict[str, Any],
    outcomes: list[dict[str, Any]],
    failures: dict[str, int],
) -> None:
    try:
        outcomes.append(await transfer(worker, cmd))
    except Exception as exc:
        # Count and go on: one failed channel must not cancel the other transfers.
        what = describe(exc)
        failures[what] = failures.get(what, 0) + 1


def describe(exc: BaseException) -> str:
    """``Type: message (cause: Type)`` of the first leaf of a (possibly grouped) exception."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    cause = exc.__cause__
    suffix = f" (cause: {type(cause).__name__}: {cause})" if cause is not None else ""
    return f"{type(exc).__name__}: {exc}{suffix}"


async def latency(worker: iii_trio.Worker, cmd: dict[str, Any]) -> dict[str, Any]:
    for n in range(int(cmd["warmup"])):
        await worker.trigger("bench::echo", {"msg": PAYLOAD_TEXT, "n": n})
    samples = []
    start = time.perf_counter()
    for n in range(int(cmd["n"])):
        t = time.perf_counter()
        reply = await worker.trigger("bench::echo", {"msg": PAYLOAD_TEXT, "n": n})
        samples.append(time.perf_counter() - t)
        assert reply["ok"] is True
    return latency_summary(samples, time.perf_counter() - start)


async def throughput(worker: iii_trio.Worker, cmd: dict[str, Any]) -> dict[str, Any]:
    total, inflight = int(cmd["n"]), int(cmd["inflight"])
    counter = iter(range(total))
    done = 0

    async def caller() -> None:
        nonlocal done
        for n in counter:
            reply = await worker.trigger("bench::echo", {"msg": PAYLOAD_TEXT, "n": n})
            assert reply["ok"] is True
            done += 1

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(inflight):
            nursery.start_soon(caller)
    elapsed = time.perf_counter() - start
    return {"calls": done, "elapsed": elapsed, "rate": done / elapsed}


async def functions(worker: iii_trio.Worker, cmd: dict[str, Any]) -> dict[str, Any]:
    listed = await worker.trigger("engine::functions::list", {"prefix": cmd["prefix"]})
    return {"count": len(listed["functions"])}


COMMANDS = {
    "transfer": transfer,
    "many": many,
    "latency": latency,
    "throughput": throughput,
    "functions": functions,
}


async def client(args: argparse.Namespace) -> None:
    async with iii_trio.connect_worker(
        args.url, name="bench-client", reconnect=False, invocation_timeout=math.inf
    ) as worker:
        emit({"event": "ready"})
        async for line in stdin_lines():
            cmd = json.loads(line)
            try:
                with trio.fail_after(float(cmd.get("timeout", 600))):
                    result = await COMMANDS[cmd["cmd"]](worker, cmd)
            except Exception as exc:
                logging.exception("command %s failed", cmd["cmd"])
                emit({"event": "error", "message": f"{type(exc).__name__}: {exc}"})
            else:
                emit({"event": "result", **result})


# --- swarm ---------------------------------------------------------------------------------


async def swarm(args: argparse.Namespace) -> None:
    emit({"event": "ready"})
    lines = stdin_lines()
    async for _ in lines:
        break  # "go"
    stop = trio.Event()
    ready = 0
    misses = 0
    all_ready = trio.Event()

    async def noop(data: Any) -> None:
        return None

    async def one(index: int) -> None:
        nonlocal ready, misses
        prefix = f"{args.prefix}{index}"
        async with iii_trio.connect_worker(
            args.url, name=f"swarm-{prefix}", reconnect=False
        ) as worker:
            for j in range(args.functions):
                worker.register_function(f"{prefix}::f{j}", noop)
            misses += await probe(worker, f"{prefix}::f{args.functions - 1}", None)
            ready += 1
            if ready == args.workers:
                all_ready.set()
            await stop.wait()

    t0 = now()
    async with trio.open_nursery() as nursery:
        for index in range(args.workers):
            nursery.start_soon(one, index)
        with trio.fail_after(300):
            await all_ready.wait()
        emit(
            {
                "event": "result",
                "elapsed": now() - t0,
                "workers": ready,
                "functions": ready * args.functions,
                "probe_misses": misses,
            }
        )
        async for _ in lines:
            pass
        stop.set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("role", choices=["serve", "client", "swarm"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--functions", type=int, default=1)
    parser.add_argument("--prefix", default="w")
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    roles = {"serve": serve, "client": client, "swarm": swarm}
    trio.run(roles[args.role], args)


if __name__ == "__main__":
    main()
