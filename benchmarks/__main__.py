"""Run the benchmark suite: ``python -m benchmarks [--quick] [--only 1,3] [--reps N]``.

Prints progress, then a table (value, min-max over the repetitions, the same-run baseline,
ratio, target, met?) and writes the same as JSON under ``benchmarks/results/``.
Exit status: 0 when every selected benchmark ran and its data checked out (targets missed
are reported, not failed, unless ``--strict``); 1 otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any

from ._common import KiB, MiB
from ._harness import ROOT, BenchError, Deadline, Row, git_commit, kill_all_children, table
from ._suite import BENCHMARKS, Config

RESULTS_DIR = ROOT / "benchmarks" / "results"


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dist in ("iii_trio", "iii-sdk", "trio", "websockets"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _load() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def _cpu_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _busy_fraction(before: tuple[int, int], after: tuple[int, int]) -> float:
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total else 0.0


def _sizes(config: Config) -> str:
    chunks = ", ".join(
        f"{c // MiB} MiB" if c >= MiB else f"{c // KiB} KiB" for c in config.chunk_sizes
    )
    return (
        f"repetitions {config.reps}; 1-2: {config.size // MiB} MiB per transfer at {chunks}; "
        f"3: {config.calls} timed calls (+{config.warmup} warm-up), {config.inflight_calls} "
        f"calls at {config.inflight} in flight; 4: {config.slow_size // MiB} MiB in "
        f"{config.slow_chunk // KiB} KiB chunks to a {config.slow_rate:g} MB/s reader; "
        f"5: {config.scale_channels} channels x {config.scale_channel_size // MiB} MiB, "
        f"{config.swarm_workers} workers x {config.swarm_functions} functions; engines: "
        f"allocator {'tuned' if config.tune_allocator else 'glibc defaults'}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    parser.add_argument(
        "--only", default="", help="comma-separated benchmarks: 1, 2, 3, 4, 5 (5a and 5b), 6 (HTTP)"
    )
    parser.add_argument("--reps", type=int, help="repetitions per measurement (default 3)")
    parser.add_argument("--size-mib", type=int, help="bytes per transfer for 1 and 2, in MiB")
    parser.add_argument(
        "--budget", type=float, default=600.0, help="seconds for the whole session (default 600)"
    )
    parser.add_argument("--out", type=Path, help="JSON results file (default: benchmarks/results/)")
    parser.add_argument(
        "--profile-engine",
        type=Path,
        metavar="DIR",
        help="cProfile the engine of benchmarks 1 and 3 into DIR/*.pstats",
    )
    parser.add_argument(
        "--no-tune-allocator",
        dest="tune_allocator",
        action="store_false",
        help="engines keep glibc's malloc defaults (iii-trio engine --no-tune-allocator)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)

    changes: dict[str, Any] = {}
    if args.reps is not None:
        if args.reps < 1:
            parser.error("--reps must be at least 1")
        changes["reps"] = args.reps
    if args.size_mib is not None:
        changes["size"] = args.size_mib * MiB
    if args.profile_engine is not None:
        changes["profile_dir"] = args.profile_engine.resolve()
    if not args.tune_allocator:
        changes["tune_allocator"] = False
    config = Config.quick(**changes) if args.quick else Config(**changes)
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    selected = [k for k in BENCHMARKS if not wanted or any(k.startswith(w) for w in wanted)]
    unknown = [w for w in wanted if not any(k.startswith(w) for k in BENCHMARKS)]
    if unknown:
        parser.error(
            f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}"
        )

    def progress(line: str) -> None:
        print(line, flush=True)

    print(f"iii_trio benchmarks on {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"sizes: {_sizes(config)}", flush=True)
    idle0 = _cpu_busy()
    time.sleep(1)
    busy_before = _busy_fraction(idle0, _cpu_busy())
    print(f"machine before the run: load average {_load():.2f}, CPUs {busy_before:.0%} busy")
    if busy_before > 0.2:
        print(
            "WARNING: other processes are using the CPUs; CPU-bound sides suffer more than the "
            "baselines, so ratios will be pessimistic",
            flush=True,
        )
    load: dict[str, dict[str, float]] = {}
    deadline = Deadline(args.budget)
    rows: list[Row] = []
    failures: dict[str, str] = {}
    timings: dict[str, float] = {}
    started = time.monotonic()
    for key in selected:
        title, bench = BENCHMARKS[key]
        print(f"\n{key}. {title}", flush=True)
        t0 = time.monotonic()
        cpu0, load0 = _cpu_busy(), _load()
        try:
            deadline.check(f"benchmark {key}")
            rows += bench(config, progress, deadline)
        except BenchError as exc:
            failures[key] = str(exc)
            print(f"  FAILED: {exc}", flush=True)
        except Exception as exc:
            failures[key] = "".join(traceback.format_exception(exc))
            print(f"  CRASHED:\n{failures[key]}", flush=True)
        finally:
            kill_all_children()
        timings[key] = time.monotonic() - t0
        load[key] = {"load_before": load0, "load_after": _load()}
        load[key]["cpus_busy"] = _busy_fraction(cpu0, _cpu_busy())
        print(
            f"  ({timings[key]:.0f}s; load average {load0:.2f} -> {load[key]['load_after']:.2f})",
            flush=True,
        )
    total = time.monotonic() - started

    print()
    if rows:
        print(table(rows))
    for key, why in failures.items():
        print(f"\nbenchmark {key} did not complete: {why.splitlines()[0]}")
    print(f"\nsizes: {_sizes(config)}")
    print(f"total time {total:.0f}s")

    out = args.out
    if out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = RESULTS_DIR / f"bench-{stamp}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "created": datetime.datetime.now(datetime.UTC).isoformat(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus_busy_before_run": busy_before,
            "load_per_benchmark": load,
        },
        "versions": _versions(),
        "commit": git_commit(),
        "quick": args.quick,
        "config": config.describe(),
        "sizes": _sizes(config),
        "rows": [row.to_json() for row in rows],
        "failures": failures,
        "seconds": {"total": total, **{f"benchmark {k}": v for k, v in timings.items()}},
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results written to {out}")
    if config.profile_dir is not None:
        print(f"engine profiles in {config.profile_dir}")
    missed = [row.name for row in rows if row.met is False]
    if failures or (args.strict and missed):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
