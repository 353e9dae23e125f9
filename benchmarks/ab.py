"""Interleaved A/B of two engine versions: ``python -m benchmarks.ab --base DIR [options]``.

Engine A runs from the checkout ``DIR`` (e.g. ``git worktree add /tmp/base <commit>``),
engine B from this one. With ``--peers own`` (the default) both get the same iii_trio SDK
peers (this checkout's), which measures the engine alone; with ``--peers each`` side A's
peers run from ``DIR`` too, which measures SDK and engine together (what benchmark 3 sees).

Each side first runs one unmeasured warm-up. Then the repetitions come in pairs, A before B in
even pairs and B before A in odd ones, so that a machine whose speed drifts, and whichever side
goes first, affect both alike. Printed: the median of each side with every repetition's value,
then B/A of each pair and their geometric mean with a 95% interval (mean of the
log ratios with Student's t). On a shared 2-core machine one pair varies by about ±10%:
seven pairs cannot resolve a 5% effect, a hundred resolve about 2%; read the interval, not the
medians.

Modes: ``--mode 65536`` or any chunk size (a channel transfer of ``--size-mib``; prints MB/s
and engine CPU ms/MB), or ``--mode calls`` (20,000 calls at 64 in flight, then 2,000 one at a
time; prints calls/s, engine CPU µs per call and p50).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

from ._harness import ROOT, Child, Group, cpu_seconds, start_engine
from ._suite import start_sdk_pair

#: One repetition: rate (calls/s or MB/s), engine CPU (µs/call or ms/MB), p50 µs (calls).
Sample = tuple[float, float, float]


def _measure(engine: Child, client: Child, mode: str, size_mib: int, scale: int = 1) -> Sample:
    """One repetition (``scale`` divides its size: warm-ups are small)."""
    cpu0, t0 = cpu_seconds(engine.pid), time.monotonic()
    if mode == "calls":
        n, one_by_one = 20_000 // scale, 2000 // scale
        thr = client.request({"cmd": "throughput", "n": n, "inflight": 64}, 300)
        lat = client.request({"cmd": "latency", "n": one_by_one, "warmup": 100}, 300)
        cpu = (cpu_seconds(engine.pid) - cpu0) * 1e6 / (n + one_by_one + 100)
        return thr["rate"], cpu, lat["p50_us"]
    size = size_mib * 1024 * 1024 // scale
    cmd = {"cmd": "transfer", "fn": "bench::sink", "size": size, "chunk": int(mode)}
    client.request({**cmd, "timeout": 300}, 310)
    mb = size / 1e6
    return mb / (time.monotonic() - t0), (cpu_seconds(engine.pid) - cpu0) * 1000 / mb, 0.0


#: Student's t at 97.5% for 1-30 degrees of freedom (about 2 beyond).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip


def geometric_interval(ratios: list[float]) -> tuple[float, float, float]:
    """The geometric mean of at least two ``ratios`` and its 95% interval (Student's t over
    the log ratios, taken as independent pairs)."""
    logs = [math.log(r) for r in ratios]
    mean = statistics.fmean(logs)
    df = len(logs) - 1
    t = _T975[df - 1] if df <= len(_T975) else 2.0
    half = t * statistics.stdev(logs) / math.sqrt(len(logs))
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", type=Path, required=True, help="checkout of engine A")
    parser.add_argument("--mode", default="65536", help="chunk size in bytes, or 'calls'")
    parser.add_argument(
        "--reps", type=int, default=10, help="pairs of measured repetitions (even: AB = BA)"
    )
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
    if args.reps < 2:
        parser.error("--reps: at least 2 pairs (an interval needs two)")
    if args.mode != "calls" and not args.mode.isdigit():
        parser.error(f"--mode: a chunk size in bytes or 'calls', not {args.mode!r}")
    results: dict[str, list[Sample]] = {"A": [], "B": []}
    with Group() as group:
        sides = {}
        for name, root in (("A", args.base.resolve()), ("B", ROOT)):
            engine, url = start_engine(group, root=root)
            _, client = start_sdk_pair(
                group, "trio", url, root=root if args.peers == "each" else ROOT
            )
            sides[name] = (engine, client)
        for engine, client in sides.values():  # warm-up, not counted
            _measure(engine, client, args.mode, args.size_mib, scale=8)
        for rep in range(args.reps):
            for name in ("A", "B") if rep % 2 == 0 else ("B", "A"):
                results[name].append(_measure(*sides[name], args.mode, args.size_mib))
    unit = ("calls/s", "engine us/call") if args.mode == "calls" else ("MB/s", "engine ms/MB")
    for name, rows in results.items():
        rate = statistics.median(r[0] for r in rows)
        cpu = statistics.median(r[1] for r in rows)
        extra = (
            f", p50 {statistics.median(r[2] for r in rows):.0f} us" if args.mode == "calls" else ""
        )
        rates = " ".join(f"{r[0]:,.0f}" for r in rows)
        cpus = " ".join(f"{r[1]:.2f}" for r in rows)
        print(f"{name}: {rate:,.0f} {unit[0]}, {cpu:.2f} {unit[1]}{extra}")
        print(f"   {unit[0]}: {rates}\n   {unit[1]}: {cpus}")
    pairs = list(zip(results["A"], results["B"], strict=True))
    for label, index in ((unit[0], 0), (unit[1], 1)):
        ratios = [b[index] / a[index] for a, b in pairs]
        mean, low, high = geometric_interval(ratios)
        print(
            f"B/A {label}: {mean:.3f} (~95% {low:.3f}-{high:.3f}; pairs: "
            + " ".join(f"{r:.3f}" for r in ratios)
            + ")"
        )


if __name__ == "__main__":
    main()
