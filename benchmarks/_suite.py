"""The five benchmarks of the suite. Each returns table rows; each runs its baseline in the
same run, interleaved with the measured side, repetition by repetition."""

from __future__ import annotations

import atexit
import shutil
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from ._common import GiB, KiB, MiB
from ._harness import (
    ROOT,
    BenchError,
    Child,
    Deadline,
    Group,
    PeakRss,
    Progress,
    Row,
    Target,
    cpu_seconds,
    memory_kib,
    start_engine,
)
from ._http_bench import bench_http
from ._inproc import in_memory_supported, local_supported

if TYPE_CHECKING:
    from collections.abc import Callable

MB = 1e6  # throughput and CPU-per-MB use decimal megabytes


@attrs.frozen(kw_only=True)
class Config:
    reps: int = 3
    #: Benchmarks 1 and 2: bytes per transfer, and the chunk sizes.
    size: int = 512 * MiB
    chunk_sizes: tuple[int, ...] = (64 * KiB, 1 * MiB)
    #: Benchmark 3: calls timed one at a time (after ``warmup``), and calls at ``inflight``.
    calls: int = 3000
    warmup: int = 300
    inflight: int = 64
    inflight_calls: int = 20_000
    #: Benchmark 4: bytes sent to a reader that takes at most ``slow_rate`` MB/s.
    slow_size: int = 1 * GiB
    slow_chunk: int = 1 * MiB
    slow_rate: float = 200.0
    #: Benchmark 5.
    scale_channels: int = 1000
    scale_channel_size: int = 1 * MiB
    scale_chunk: int = 64 * KiB
    swarm_workers: int = 500
    swarm_functions: int = 20
    swarm_processes: int = 2
    #: cProfile the engine processes of benchmarks 1 and 3 into this folder.
    profile_dir: Path | None = None
    #: Engines call ``iii_trio.tune_allocator()`` at start, as ``iii-trio engine`` does.
    tune_allocator: bool = True

    @classmethod
    def quick(cls, **changes: Any) -> Config:
        return cls(
            size=64 * MiB,
            calls=500,
            warmup=50,
            inflight_calls=2000,
            slow_size=128 * MiB,
            scale_channels=100,
            swarm_workers=100,
            **changes,
        )

    def describe(self) -> dict[str, Any]:
        out = attrs.asdict(self)
        out["profile_dir"] = None if self.profile_dir is None else str(self.profile_dir)
        return out


def _timeout(size: int, floor: float = 60.0) -> float:
    """Seconds allowed for moving ``size`` bytes: assumes at least 10 MB/s."""
    return max(floor, size / MB / 10)


def _label(chunk: int) -> str:
    return f"{chunk // MiB} MiB" if chunk >= MiB and chunk % MiB == 0 else f"{chunk // KiB} KiB"


def check_stream(result: dict[str, Any], size: int, chunk: int, what: str) -> None:
    """Raise BenchError unless every byte arrived, in order."""
    expected = size // chunk
    if result["size"] != size or result["mismatches"] or result["checked"] != expected:
        raise BenchError(
            f"{what}: data check failed: got {result['size']} of {size} bytes, "
            f"{result['checked']} of {expected} chunk stamps checked, "
            f"{result['mismatches']} out of place"
        )


def _start_engine(group: Group, config: Config, profile: str | None = None) -> tuple[Child, str]:
    """An engine process as ``config`` says (allocator; cProfile into ``profile``.pstats)."""
    path = None if profile is None else _profile_path(config, profile)
    return start_engine(group, path, tune_allocator=config.tune_allocator)


def _profile_path(config: Config, name: str) -> Path | None:
    if config.profile_dir is None:
        return None
    config.profile_dir.mkdir(parents=True, exist_ok=True)
    return config.profile_dir / f"{name}.pstats"


# --- 1. channel throughput, 2-hop ----------------------------------------------------------


def raw_transfer(size: int, chunk: int, rate: float = 0.0) -> dict[str, float]:
    """One transfer writer → raw relay → reader; MB/s, relay CPU ms per MB, relay RSS growth."""
    timeout = _timeout(size)
    with Group() as group:
        relay = group.start("raw-relay", "_raw", "relay", "--chunk", str(chunk))
        port = str(relay.read(10)["port"])
        reader = group.start(
            "raw-reader",
            "_raw",
            "reader",
            "--port",
            port,
            "--chunk",
            str(chunk),
            "--rate",
            str(rate),
        )
        reader.read(10)
        writer = group.start(
            "raw-writer",
            "_raw",
            "writer",
            "--port",
            port,
            "--chunk",
            str(chunk),
            "--size",
            str(size),
        )
        writer.read(30)
        with PeakRss(relay.pid) as rss:
            cpu0 = cpu_seconds(relay.pid)
            writer.send("go")
            got = reader.read(timeout)
            done = relay.read(10)
            cpu1 = cpu_seconds(relay.pid)
        sent = writer.read(10)
    check_stream(got, size, chunk, "raw relay")
    if done["bytes"] != size:
        raise BenchError(f"raw relay moved {done['bytes']} bytes of {size}")
    return {
        "mbps": size / MB / (got["t_eof"] - sent["t0"]),
        "cpu_ms_per_mb": (cpu1 - cpu0) * 1000 / (size / MB),
        "rss_growth_mib": rss.growth_mib,
    }


def sdk_transfer(
    engine: Child, client: Child, size: int, chunk: int, what: str, **extra: Any
) -> dict[str, float]:
    """One transfer through the engine: client process → engine → ``bench::sink``."""
    timeout = _timeout(size)
    cpu0 = cpu_seconds(engine.pid)
    got = client.request(
        {
            "cmd": "transfer",
            "fn": "bench::sink",
            "size": size,
            "chunk": chunk,
            "timeout": timeout,
            **extra,
        },
        timeout + 10,
    )
    cpu1 = cpu_seconds(engine.pid)
    check_stream(got, size, chunk, what)
    return {
        "mbps": size / MB / (got["t_eof"] - got["t0"]),
        "cpu_ms_per_mb": (cpu1 - cpu0) * 1000 / (size / MB),
    }


def start_sdk_pair(group: Group, sdk: str, url: str, *, root: Path = ROOT) -> tuple[Child, Child]:
    """A ``bench::sink`` server and a client process, ``sdk`` = ``trio`` or ``official``,
    run from the checkout ``root`` (its benchmarks and its iii_trio)."""
    module = "_trio_peer" if sdk == "trio" else "_official_peer"
    env = None
    if sdk == "official":
        # The official SDK writes ~/.iii/run/worker-<pid>.json; keep that out of $HOME.
        env = {"HOME": str(Path(group_tmp()) / "home")}
    server = group.start(f"{sdk}-serve", module, "serve", "--url", url, env=env, root=root)
    server.read(60)
    client = group.start(f"{sdk}-client", module, "client", "--url", url, env=env, root=root)
    client.read(60)
    return server, client


_tmp: str | None = None


def group_tmp() -> str:
    global _tmp
    if _tmp is None:
        _tmp = tempfile.mkdtemp(prefix="iii-bench-")
        atexit.register(shutil.rmtree, _tmp, True)
    return _tmp


def bench_channel_2hop(config: Config, progress: Progress, deadline: Deadline) -> list[Row]:
    size = config.size
    sides = ("raw", "trio", "official")
    keys = [(s, c) for s in sides for c in config.chunk_sizes]
    mbps: dict[tuple[str, int], list[float]] = {k: [] for k in keys}
    cpu: dict[tuple[str, int], list[float]] = {k: [] for k in keys}
    with Group() as group:
        trio_engine, trio_url = _start_engine(group, config, "engine-bench1-trio")
        _, trio_client = start_sdk_pair(group, "trio", trio_url)
        off_engine, off_url = _start_engine(group, config)
        _, off_client = start_sdk_pair(group, "official", off_url)
        for rep in range(config.reps):
            deadline.check(f"benchmark 1, repetition {rep + 1}")
            for chunk in config.chunk_sizes:
                runs: dict[str, Callable[[], dict[str, float]]] = {
                    "raw": partial(raw_transfer, size, chunk),
                    "trio": partial(
                        sdk_transfer, trio_engine, trio_client, size, chunk, "iii_trio SDK"
                    ),
                    "official": partial(
                        sdk_transfer, off_engine, off_client, size, chunk, "official SDK"
                    ),
                }
                for side, run in runs.items():
                    result = run()
                    mbps[side, chunk].append(result["mbps"])
                    cpu[side, chunk].append(result["cpu_ms_per_mb"])
                    progress(
                        f"  1. rep {rep + 1} {_label(chunk):>6} {side:>8}: "
                        f"{result['mbps']:7.0f} MB/s, relay CPU {result['cpu_ms_per_mb']:.2f} ms/MB"
                    )
    rows = []
    for chunk in config.chunk_sizes:
        label = _label(chunk)
        rows += [
            Row(
                "1",
                f"1a channel 2-hop, iii_trio SDK, {label}",
                "MB/s",
                mbps["trio", chunk],
                mbps["raw", chunk],
                "raw relay",
                Target("ratio", ">=", 0.45),
            ),
            Row(
                "1",
                f"1a engine CPU per MB, iii_trio SDK, {label}",
                "ms/MB",
                cpu["trio", chunk],
                cpu["raw", chunk],
                "raw relay",
                Target("value", "<=", 1.2),
            ),
            Row(
                "1",
                f"1b channel 2-hop, official SDK, {label}",
                "MB/s",
                mbps["official", chunk],
                mbps["raw", chunk],
                "raw relay",
                Target("ratio", ">=", 0.35),
            ),
            Row(
                "1",
                f"1b engine CPU per MB, official SDK, {label}",
                "ms/MB",
                cpu["official", chunk],
                cpu["raw", chunk],
                "raw relay",
            ),
        ]
    return rows


# --- 2. in-process -------------------------------------------------------------------------


def inproc_run(kind: str, size: int, chunk: int) -> float:
    with Group() as group:
        child = group.start(
            f"inproc-{kind}", "_inproc", kind, "--size", str(size), "--chunk", str(chunk)
        )
        got = child.read(_timeout(size) + 30)
    check_stream(got, size, chunk, f"in-process {kind}")
    return size / MB / float(got["elapsed"])


def bench_inproc(config: Config, progress: Progress, deadline: Deadline) -> list[Row]:
    size = config.size
    kinds = ["memchan", "iii-tcp"]
    if in_memory_supported():
        kinds.append("iii-memory")
    if local_supported():
        kinds.append("iii-local")
    results: dict[tuple[str, int], list[float]] = {
        (k, c): [] for k in kinds for c in config.chunk_sizes
    }
    for rep in range(config.reps):
        deadline.check(f"benchmark 2, repetition {rep + 1}")
        for chunk in config.chunk_sizes:
            for kind in kinds:
                value = inproc_run(kind, size, chunk)
                results[kind, chunk].append(value)
                progress(f"  2. rep {rep + 1} {_label(chunk):>6} {kind:>10}: {value:8.0f} MB/s")
    # The target applies to the best embedded transport the library offers.
    best = kinds[-1]
    rows = []
    for kind in kinds[1:]:
        transport = {
            "iii-tcp": "loopback TCP",
            "iii-memory": "in-memory byte stream",
            "iii-local": "Engine.local_dialer",
        }[kind]
        rows += [
            Row(
                "2",
                f"2 in-process channel ({transport}), {_label(chunk)}",
                "MB/s",
                results[kind, chunk],
                results["memchan", chunk],
                "trio memory channel",
                Target("ratio", ">=", 0.6) if kind == best else None,
            )
            for chunk in config.chunk_sizes
        ]
    return rows


# --- 3. invocations ------------------------------------------------------------------------


def bench_invocations(config: Config, progress: Progress, deadline: Deadline) -> list[Row]:
    keys = ("p50_us", "p99_us", "rate1", "rate64", "cpu_us_per_call")
    ours: dict[str, list[float]] = {k: [] for k in keys}
    raw: dict[str, list[float]] = {k: [] for k in keys}
    trio_relay: dict[str, list[float]] = {k: [] for k in keys}
    latency_cmd = {"cmd": "latency", "n": config.calls, "warmup": config.warmup}
    inflight_cmd = {"cmd": "throughput", "n": config.inflight_calls, "inflight": config.inflight}
    timeout = 120.0
    with Group() as group:
        relay = group.start("json-relay", "_raw", "jrelay")
        port = str(relay.read(10)["port"])
        group.start("json-worker", "_raw", "jworker", "--port", port).read(10)
        raw_caller = group.start("json-caller", "_raw", "jcaller", "--port", port)
        raw_caller.read(10)
        # The same relay written with trio streams: what the event loop alone costs.
        trelay = group.start("trio-json-relay", "_trio_relay")
        tport = str(trelay.read(10)["port"])
        group.start("trio-json-worker", "_raw", "jworker", "--port", tport).read(10)
        trio_caller = group.start("trio-json-caller", "_raw", "jcaller", "--port", tport)
        trio_caller.read(10)
        engine, url = _start_engine(group, config, "engine-bench3-trio")
        _, client = start_sdk_pair(group, "trio", url)
        for rep in range(config.reps):
            deadline.check(f"benchmark 3, repetition {rep + 1}")
            for side, caller, relay_pid, out in (
                ("raw", raw_caller, relay.pid, raw),
                ("trio-relay", trio_caller, trelay.pid, trio_relay),
                ("iii_trio", client, engine.pid, ours),
            ):
                lat = caller.request(latency_cmd, timeout)
                cpu0 = cpu_seconds(relay_pid)
                thr = caller.request(inflight_cmd, timeout)
                cpu1 = cpu_seconds(relay_pid)
                if thr["calls"] != config.inflight_calls:
                    raise BenchError(f"{side}: {thr['calls']} of {config.inflight_calls} calls")
                out["p50_us"].append(lat["p50_us"])
                out["p99_us"].append(lat["p99_us"])
                out["rate1"].append(lat["rate"])
                out["rate64"].append(thr["rate"])
                out["cpu_us_per_call"].append((cpu1 - cpu0) * 1e6 / thr["calls"])
                progress(
                    f"  3. rep {rep + 1} {side:>10}: p50 {lat['p50_us']:6.0f} us, "
                    f"p99 {lat['p99_us']:6.0f} us, {lat['rate']:6.0f} calls/s (1 in flight), "
                    f"{thr['rate']:6.0f} calls/s ({config.inflight} in flight)"
                )
    n = config.inflight
    return [
        Row(
            "3",
            "3 invocation p50, 1 in flight",
            "us",
            ours["p50_us"],
            raw["p50_us"],
            "raw JSON relay",
            Target("ratio", "<=", 2.0),
        ),
        Row(
            "3",
            "3 invocation p99, 1 in flight",
            "us",
            ours["p99_us"],
            raw["p99_us"],
            "raw JSON relay",
        ),
        Row(
            "3", "3 calls/s, 1 in flight", "calls/s", ours["rate1"], raw["rate1"], "raw JSON relay"
        ),
        Row(
            "3",
            f"3 calls/s, {n} in flight",
            "calls/s",
            ours["rate64"],
            raw["rate64"],
            "raw JSON relay",
            Target("value", ">=", 12_000),
        ),
        Row(
            "3",
            f"3 engine CPU per call, {n} in flight",
            "us",
            ours["cpu_us_per_call"],
            raw["cpu_us_per_call"],
            "raw JSON relay",
        ),
        # Reference: the raw relay's work done by trio streams (same blocking ends). Its
        # ratios bound what any trio relay can reach here; no target.
        Row(
            "3",
            "3 ref: trio-streams JSON relay p50",
            "us",
            trio_relay["p50_us"],
            raw["p50_us"],
            "raw JSON relay",
        ),
        Row(
            "3",
            f"3 ref: trio-streams JSON relay calls/s, {n} in flight",
            "calls/s",
            trio_relay["rate64"],
            raw["rate64"],
            "raw JSON relay",
        ),
        Row(
            "3",
            f"3 ref: trio-streams JSON relay CPU per call, {n} in flight",
            "us",
            trio_relay["cpu_us_per_call"],
            raw["cpu_us_per_call"],
            "raw JSON relay",
        ),
    ]


# --- 4. engine memory with a slow reader ---------------------------------------------------


def bench_slow_reader(config: Config, progress: Progress, deadline: Deadline) -> list[Row]:
    size, chunk, rate = config.slow_size, config.slow_chunk, config.slow_rate
    growth: list[float] = []
    raw_growth: list[float] = []
    achieved: list[float] = []
    for rep in range(config.reps):
        deadline.check(f"benchmark 4, repetition {rep + 1}")
        raw = raw_transfer(size, chunk, rate=rate)
        raw_growth.append(raw["rss_growth_mib"])
        with Group() as group:
            engine, url = _start_engine(group, config)
            _, client = start_sdk_pair(group, "trio", url)
            with PeakRss(engine.pid) as rss:
                result = sdk_transfer(engine, client, size, chunk, "slow reader", rate=rate)
        growth.append(rss.growth_mib)
        achieved.append(result["mbps"])
        progress(
            f"  4. rep {rep + 1}: engine peak RSS +{rss.growth_mib:.1f} MiB "
            f"(raw relay +{raw['rss_growth_mib']:.1f} MiB) at {result['mbps']:.0f} MB/s"
        )
    return [
        Row(
            "4",
            f"4 engine RSS growth, {size // MiB} MiB to a {rate:g} MB/s reader",
            "MiB",
            growth,
            raw_growth,
            "raw relay",
            Target("value", "<=", 64),
            note="ratio not meaningful (the raw relay holds one buffer)",
            extra={"reader_mbps": achieved},
        ),
    ]


# --- 5. scale ------------------------------------------------------------------------------


def bench_many_channels(config: Config, progress: Progress, deadline: Deadline) -> list[Row]:
    n, size, chunk = config.scale_channels, config.scale_channel_size, config.scale_chunk
    times: list[float] = []
    growth: list[float] = []
    for rep in range(config.reps):
        deadline.check(f"benchmark 5a, repetition {rep + 1}")
        with Group() as group:
            engine, url = _start_engine(group, config)
            _, client = start_sdk_pair(group, "trio", url)
            with PeakRss(engine.pid) as rss:
                got = client.request(
                    {
                        "cmd": "many",
                        "fn": "bench::sink",
                        "channels": n,
                        "size": size,
                        "chunk": chunk,
                        "timeout": 300,
                    },
                    310,
                )
        if got["failures"]:
            raise BenchError(
                f"{n} channels: {n - got['channels']} transfers failed within "
                f"{got['elapsed']:.1f}s: {got['failures']}"
            )
        if got["channels"] != n or got["bad_sizes"] or got["mismatches"]:
            raise BenchError(f"{n} channels: {got}")
        if got["checked"] != n * (size // chunk):
            raise BenchError(f"{n} channels: only {got['checked']} stamps checked")
        times.append(got["elapsed"])
        growth.append(rss.growth_mib)
        progress(
            f"  5a. rep {rep + 1}: {n} channels x {size // MiB} MiB in {got['elapsed']:.2f}s, "
            f"engine peak RSS +{rss.growth_mib:.1f} MiB"
        )
    label = f"5a {n} channels x {size // MiB} MiB at once"
    return [
        Row("5a", f"{label}: time", "s", times),
        Row("5a", f"{label}: engine RSS growth", "MiB", growth),
    ]


def bench_many_workers(config: Config, progress: Progress, deadline: Deadline) -> list[Row]:
    times: list[float] = []
    growth: list[float] = []
    totals: list[float] = []
    for rep in range(config.reps):
        deadline.check(f"benchmark 5b, repetition {rep + 1}")
        elapsed, rss_growth, total, misses = _swarm(config)
        times.append(elapsed)
        growth.append(rss_growth)
        totals.append(total)
        progress(
            f"  5b. rep {rep + 1}: {config.swarm_workers} workers x {config.swarm_functions} "
            f"functions in {elapsed:.2f}s, engine peak RSS +{rss_growth:.1f} MiB "
            f"({total:.0f} MiB total; {misses} readiness probes missed)"
        )
    label = f"5b {config.swarm_workers} workers x {config.swarm_functions} functions"
    return [
        Row("5b", f"{label}: time", "s", times),
        Row(
            "5b",
            f"{label}: engine RSS growth",
            "MiB",
            growth,
            extra={"engine_rss_total_mib": totals},
        ),
    ]


def _swarm(config: Config) -> tuple[float, float, float, int]:
    procs = config.swarm_processes
    per = [config.swarm_workers // procs + (i < config.swarm_workers % procs) for i in range(procs)]
    with Group() as group:
        engine, url = _start_engine(group, config)
        swarms = [
            group.start(
                f"swarm{i}",
                "_trio_peer",
                "swarm",
                "--url",
                url,
                "--workers",
                str(k),
                "--functions",
                str(config.swarm_functions),
                "--prefix",
                f"s{i}w",
            )
            for i, k in enumerate(per)
        ]
        for swarm in swarms:
            swarm.read(60)
        _, client = start_sdk_pair(group, "trio", url)
        with PeakRss(engine.pid) as rss:
            t0 = time.monotonic()
            for swarm in swarms:
                swarm.send("go")
            results = [swarm.read(300) for swarm in swarms]
            elapsed = time.monotonic() - t0
        total = memory_kib(engine.pid)["VmRSS"] / 1024
        count = client.request({"cmd": "functions", "prefix": "s"}, 60)["count"]
    expected = config.swarm_workers * config.swarm_functions
    if sum(r["functions"] for r in results) != expected or count != expected:
        raise BenchError(f"swarm: {count} functions listed by the engine, expected {expected}")
    return elapsed, rss.growth_mib, total, sum(int(r["probe_misses"]) for r in results)


BENCHMARKS = {
    "1": ("channel throughput, 2-hop", bench_channel_2hop),
    "2": ("channel throughput, in-process", bench_inproc),
    "3": ("invocation latency and throughput, 2-hop", bench_invocations),
    "4": ("engine memory with a slow reader", bench_slow_reader),
    "5a": ("scale: many channels at once", bench_many_channels),
    "5b": ("scale: many workers registering functions", bench_many_workers),
    "6": ("HTTP triggers: JSON route and streamed upload", bench_http),
}
