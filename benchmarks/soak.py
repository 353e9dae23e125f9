"""Soak test (``nox -s soak``): 10,000 invocations and 1,000 sha256-checked channel transfers
through an engine process, while worker processes are killed and restarted at random.

usage: python -m benchmarks.soak [--calls N] [--transfers N] [--workers N] [--seed S]

Every call must either return the right answer or fail with a clear error (the worker was
killed: ``invocation_stopped`` / ``function_not_found`` / a broken channel); a wrong answer, a
wrong checksum, a clean end of a truncated stream or a hang fails the run. Afterwards the
engine must hold zero invocations and zero channels, and its RSS must be back within 10 % of
what it was after warm-up. Exit status 0 on success, 1 on failure. Bounded in time (--budget).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import trio

import iii_trio


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def _start(cmd: list[str]) -> tuple[trio.Process, dict[str, Any]]:
    proc = await trio.lowlevel.open_process(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    buffer = b""
    with trio.fail_after(30):
        while b"\n" not in buffer:
            chunk = await proc.stdout.receive_some()
            if not chunk:
                raise RuntimeError(f"{cmd} exited before it was ready")
            buffer += chunk
    return proc, json.loads(buffer.split(b"\n")[0])


class Pool:
    """Worker processes that the soak kills and restarts."""

    def __init__(self, url: str, size: int) -> None:
        self.url = url
        self.size = size
        self.procs: dict[str, trio.Process] = {}
        self.kills = 0

    async def start(self, prefix: str) -> None:
        proc, _ = await _start([sys.executable, "-m", "benchmarks._soak_worker", self.url, prefix])
        self.procs[prefix] = proc

    async def kill_one(self, rng: random.Random) -> None:
        prefix = rng.choice(sorted(self.procs))
        proc = self.procs.pop(prefix)
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
        self.kills += 1
        await self.start(prefix)

    async def stop(self) -> None:
        for proc in self.procs.values():
            proc.kill()
            await proc.wait()


async def _warm_transfer(driver: iii_trio.Worker, target: str) -> None:
    async with driver.open_channel() as channel, trio.open_nursery() as nursery:
        nursery.start_soon(driver.trigger, target, {"reader": channel.reader_ref})
        await channel.writer.send_all(b"w" * (1 << 20))
        await channel.writer.aclose()


CLEAR_FAILURES = (iii_trio.InvocationStopped, iii_trio.FunctionNotFound, iii_trio.ChannelBroken)


async def soak(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    engine, ready = await _start([sys.executable, "-m", "benchmarks._engine_proc"])
    url = ready["url"]
    pool = Pool(url, args.workers)
    outcomes: Counter[str] = Counter()
    problems: list[str] = []
    try:
        for i in range(args.workers):
            await pool.start(f"w{i}")
        async with iii_trio.connect_worker(url, name="soak-driver") as driver:
            # Warm-up (calls and transfers, so the allocator has seen the working set), then
            # the RSS reference.
            for i in range(200):
                await driver.trigger(f"w{i % args.workers}::echo", {"n": i})
            for _ in range(4):
                async with trio.open_nursery() as nursery:
                    for i in range(8):
                        nursery.start_soon(_warm_transfer, driver, f"w{i % args.workers}::sink")
            rss_start = _rss_kib(engine.pid)
            started = time.monotonic()

            async def call(n: int) -> None:
                target = f"w{rng.randrange(args.workers)}::echo"
                try:
                    got = await driver.trigger(target, {"n": n}, timeout=30)
                except CLEAR_FAILURES as exc:
                    outcomes[f"call failed clearly ({type(exc).__name__})"] += 1
                    return
                if got != n:
                    problems.append(f"{target} answered {got!r} for {n}")
                outcomes["call ok"] += 1

            async def transfer(n: int) -> None:
                target = f"w{rng.randrange(args.workers)}::sink"
                data = rng.randbytes(rng.randrange(1, 1 << 20))
                result: dict[str, Any] = {}
                failed: list[str] = []
                try:
                    async with driver.open_channel() as channel, trio.open_nursery() as nursery:

                        async def run() -> None:
                            result.update(
                                await driver.trigger(
                                    target, {"reader": channel.reader_ref}, timeout=60
                                )
                            )

                        nursery.start_soon(run)
                        await channel.writer.send_all(data)
                        await channel.writer.aclose()
                except* CLEAR_FAILURES as group:
                    leaf: BaseException = group
                    while isinstance(leaf, BaseExceptionGroup):
                        leaf = leaf.exceptions[0]
                    failed.append(type(leaf).__name__)
                if failed:
                    outcomes[f"transfer failed clearly ({failed[0]})"] += 1
                    return
                if result != {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}:
                    problems.append(f"transfer {n} to {target}: {result}")
                outcomes["transfer ok"] += 1

            async def kill_soon() -> None:
                # Mid-batch, while calls and streams are in flight.
                await trio.sleep(rng.uniform(0, 0.05))  # sleep-ok: random kill time in a soak tool
                await pool.kill_one(rng)

            batches = max(args.calls // args.concurrency, 1)
            kill_batches = set(rng.sample(range(batches), min(10, batches)))
            with trio.move_on_after(args.budget) as budget:
                for batch, start in enumerate(range(0, args.calls, args.concurrency)):
                    async with trio.open_nursery() as nursery:
                        for n in range(start, min(start + args.concurrency, args.calls)):
                            nursery.start_soon(call, n)
                        if batch in kill_batches:
                            nursery.start_soon(kill_soon)
                for start in range(0, args.transfers, 8):
                    async with trio.open_nursery() as nursery:
                        for n in range(start, min(start + 8, args.transfers)):
                            nursery.start_soon(transfer, n)
                        if rng.random() < 0.1:
                            nursery.start_soon(kill_soon)
            if budget.cancelled_caught:
                problems.append(f"did not finish within {args.budget}s")
            elapsed = time.monotonic() - started
            # The engine must be empty once every call and transfer has ended.
            with trio.move_on_after(10):
                while True:
                    channels = (await driver.trigger("engine::channels::list", {}))["channels"]
                    workers = (await driver.trigger("engine::workers::list", {}))["workers"]
                    active = sum(
                        w["active_invocations"] for w in workers if w["name"] != "soak-driver"
                    )
                    if not channels and active == 0:
                        break
                    await trio.sleep(
                        0.1
                    )  # sleep-ok: polling a remote engine's state in a soak tool
            if channels or active:
                problems.append(
                    f"engine still holds {len(channels)} channels, {active} invocations"
                )
            rss_end = _rss_kib(engine.pid)
    finally:
        await pool.stop()
        engine.kill()
        await engine.wait()
    growth = (rss_end - rss_start) / rss_start
    if growth > 0.10:
        problems.append(f"engine RSS grew {growth:.1%} ({rss_start} -> {rss_end} KiB)")
    print(f"soak: {elapsed:.1f}s, {pool.kills} worker kills")
    for key, value in sorted(outcomes.items()):
        print(f"  {key}: {value}")
    print(f"  engine RSS after warm-up {rss_start} KiB, at the end {rss_end} KiB ({growth:+.1%})")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print("soak passed" if not problems else "soak FAILED")
    return 0 if not problems else 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--transfers", type=int, default=1_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--budget", type=float, default=900.0, help="seconds before giving up")
    sys.exit(trio.run(soak, parser.parse_args()))


if __name__ == "__main__":
    main()
