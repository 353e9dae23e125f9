"""Interleaved A/B of two engine versions: ``python -m benchmarks.ab --base DIR [options]``.

Engine A runs from the checkout ``DIR`` (e.g. ``git worktree add /tmp/base <commit>``),
engine B from this one. With ``--peers own`` (the default) both get the same iii_trio SDK
peers (this checkout's), which measures the engine alone; with ``--peers each`` side A's
peers run from ``DIR`` too, which measures SDK and engine together (what benchmark 3 sees).
The runs alternate A, B, A, B, ... so that a machine whose speed drifts affects both alike,
and the median of each side is printed with every repetition's value.

Modes: ``--mode 65536`` or any chunk size (a channel transfer of ``--size-mib``; prints MB/s
and engine CPU ms/MB), or ``--mode calls`` (20,000 calls at 64 in flight, then 2,000 one at a
time; prints calls/s, engine CPU µs per call and p50).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from ._harness import ROOT, Group, cpu_seconds, start_engine
from ._suite import start_sdk_pair


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", type=Path, required=True, help="checkout of engine A")
    parser.add_argument("--mode", default="65536", help="chunk size in bytes, or 'calls'")
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument(
        "--peers",
        choices=["own", "each"],
        default="own",
        help="SDK peers from this checkout for both sides, or from each side's checkout",
    )
    args = parser.parse_args()
    if not (args.base / "iii_trio").is_dir():
        parser.error(f"{args.base} is not an iii_trio checkout")
    results: dict[str, list[tuple[float, float, float]]] = {"A": [], "B": []}
    with Group() as group:
        sides = {}
        for name, root in (("A", args.base.resolve()), ("B", ROOT)):
            engine, url = start_engine(group, root=root)
            _, client = start_sdk_pair(
                group, "trio", url, root=root if args.peers == "each" else ROOT
            )
            sides[name] = (engine, client)
        for _ in range(args.reps):
            for name, (engine, client) in sides.items():
                cpu0, t0 = cpu_seconds(engine.pid), time.monotonic()
                if args.mode == "calls":
                    n = 20_000
                    thr = client.request({"cmd": "throughput", "n": n, "inflight": 64}, 300)
                    lat = client.request({"cmd": "latency", "n": 2000, "warmup": 100}, 300)
                    cpu = (cpu_seconds(engine.pid) - cpu0) * 1e6 / (n + 2100)
                    results[name].append((thr["rate"], cpu, lat["p50_us"]))
                else:
                    size = args.size_mib * 1024 * 1024
                    cmd = {
                        "cmd": "transfer",
                        "fn": "bench::sink",
                        "size": size,
                        "chunk": int(args.mode),
                        "timeout": 300,
                    }
                    client.request(cmd, 310)
                    mb = size / 1e6
                    elapsed = time.monotonic() - t0
                    cpu = (cpu_seconds(engine.pid) - cpu0) * 1000 / mb
                    results[name].append((mb / elapsed, cpu, 0.0))
    unit = ("calls/s", "engine us/call") if args.mode == "calls" else ("MB/s", "engine ms/MB")
    for name, rows in results.items():
        rate = statistics.median(r[0] for r in rows)
        cpu = statistics.median(r[1] for r in rows)
        extra = (
            f", p50 {statistics.median(r[2] for r in rows):.0f} us" if args.mode == "calls" else ""
        )
        each = " ".join(f"{r[1]:.2f}" for r in rows)
        print(f"{name}: {rate:,.0f} {unit[0]}, {cpu:.2f} {unit[1]}{extra}   ({unit[1]}: {each})")


if __name__ == "__main__":
    main()
