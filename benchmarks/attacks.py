"""Issue 12's attacks on an engine, with before/after numbers: ``python -m benchmarks.attacks``.

    python -m benchmarks.attacks [--engine-root DIR] [--only 1,hol-executor] [--quick]
                                 [--engine-setting [ATTACK:]KEY=VALUE ...] [--out FILE]

Each attack gets a fresh engine process running the engine of the checkout ``--engine-root``
(default: this one) under this checkout's harness, attackers on raw WebSockets in this process,
and the healthy side (this checkout's SDK, ``_attack_peer``) in another. For each attack the
table shows the healthy calls' p50/p99 before, during and after it, the calls that timed out
during it, the engine's RSS, its longest event-loop stall, the slowest answer to a call the
engine answers itself, and how the engine treated the attacker. Details follow the table, and
everything goes to a JSON file under ``benchmarks/results/``.

``--engine-setting`` passes :class:`iii_trio.EngineConfig` fields (a JSON value, or else a
string) to the engine of every attack, or of one (``6:ping_interval=2``); settings the engine
does not have are reported as not supported and left out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import attrs
import trio

from ._attack_cases import ATTACKS, Attack
from ._attack_kit import EngineUnderTest, Env, HealthySide, RawPeer, Sizes
from ._harness import (
    ROOT,
    BenchError,
    Group,
    PeakRss,
    fmt,
    git_commit,
    kill_all_children,
    render_table,
    start_engine_under_test,
)
from ._trio_peer import describe

RESULTS_DIR = ROOT / "benchmarks" / "results"


@attrs.define
class Run:
    """One attack's record (the JSON file has one per attack)."""

    key: str
    title: str
    load_average: list[float]
    #: Where the engine's ``iii_trio`` came from, and its version.
    engine_package: str = ""
    settings: dict[str, Any] = attrs.field(factory=dict)
    unsupported: list[str] = attrs.field(factory=list)
    before: dict[str, Any] | None = None
    during: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    rss_kib: dict[str, int] = attrs.field(factory=dict)
    attacker: str = "-"
    outcome: dict[str, Any] | None = None
    details: dict[str, Any] = attrs.field(factory=dict)
    seconds: float = 0.0
    #: Why the attack could not run to its end (the first error), and the whole traceback.
    failure: str | None = None
    error: str | None = None
    #: The engine's exit status if it died during the attack.
    engine_exit: int | None = None


async def _phases(attack: Attack, env: Env, healthy: HealthySide, run: Run) -> None:
    sizes = env.sizes
    engine = env.engine
    await attack.prepare()
    run.before = await healthy.measure(sizes.window)
    with PeakRss(engine.pid) as peak:
        await healthy.start()
        with trio.fail_after(attack.bound(sizes)):
            await attack.run()
        run.during = await healthy.stop()
        await attack.leave()
    await trio.sleep(sizes.settle)
    run.rss_kib = {"before": peak.before_kib, "peak": peak.peak_kib, "after": engine.rss_kib()}
    run.after = await healthy.measure(sizes.window)


async def run_attack(
    attack_type: type[Attack], root: Path, settings: dict[str, Any], sizes: Sizes
) -> Run:
    run = Run(attack_type.key, attack_type.title, list(os.getloadavg()))
    t0 = time.monotonic()
    with Group() as group:
        try:
            await _run_in(group, attack_type, root, settings, sizes, run)
        except Exception as exc:
            run.failure = describe(exc)
            run.error = "".join(traceback.format_exception(exc))
            engine = next((c for c in group.children if c.name == "engine"), None)
            if engine is not None and engine.popen.poll() is not None:
                run.engine_exit = engine.popen.returncode
                run.error += f"\nthe engine exited with {run.engine_exit}:\n{engine.log_tail()}"
    run.seconds = round(time.monotonic() - t0, 1)
    return run


async def _run_in(
    group: Group,
    attack_type: type[Attack],
    root: Path,
    settings: dict[str, Any],
    sizes: Sizes,
    run: Run,
) -> None:
    # Children are started from this thread (they die with the thread that started them);
    # only their answers are awaited in other threads.
    child = start_engine_under_test(group, root, settings)
    ready = await trio.to_thread.run_sync(child.read, 30.0)
    run.settings, run.unsupported = ready["settings"], ready["unsupported"]
    run.engine_package = f"{ready['iii_trio']} {ready['version']}"
    if not Path(ready["iii_trio"]).is_relative_to(root):
        raise BenchError(f"the engine imported {ready['iii_trio']}, not the one in {root}")
    engine = EngineUnderTest(child, ready)
    healthy = await HealthySide.start_in(group, engine, sizes)
    async with trio.open_nursery() as nursery:
        env = Env(engine, group, nursery, sizes, await RawPeer.connect(engine.url))
        env.observer.read_in_background(nursery)
        try:
            await _phases(attack_type(env), env, healthy, run)
        finally:
            run.details = env.details
            if env.outcome is not None:
                run.outcome = attrs.asdict(env.outcome)
                run.attacker = env.outcome.brief()
            run.attacker = env.verdict or run.attacker
            await env.close()
            nursery.cancel_scope.cancel()


# --- the report ----------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "t/o" if value is None else fmt(value)


def _latency(window: dict[str, Any] | None) -> str:
    if window is None:
        return "-"
    return f"{_ms(window['p50_ms'])}/{_ms(window['p99_ms'])}"


def _rss(rss: dict[str, int]) -> str:
    if not rss:
        return "-"
    return "/".join(f"{rss[k] / 1024:.0f}" for k in ("before", "peak", "after"))


def table(runs: list[Run]) -> str:
    header = [
        "attack",
        "p50/p99 ms before",
        "during",
        "after",
        "timed out during",
        "engine RSS MiB before/peak/after",
        "engine stall ms",
        "probe max ms",
        "attacker",
    ]
    lines = []
    for run in runs:
        during = run.during or {}
        lines.append(
            [
                run.key,
                _latency(run.before),
                _latency(run.during),
                _latency(run.after),
                f"{during['timeouts']}/{during['calls']}" if during else "-",
                _rss(run.rss_kib),
                fmt(during.get("engine_lag_ms")),
                fmt(during.get("probe_max_ms")),
                "FAILED" if run.error else run.attacker,
            ]
        )
    return render_table(header, lines)


def _window_line(name: str, window: dict[str, Any] | None) -> str:
    if window is None:
        return f"   {name}: -"
    errors = f", errors {window['errors']}" if window["errors"] else ""
    return (
        f"   {name}: {window['seconds']:.1f} s, {window['ok']} ok / {window['calls']} calls, "
        f"{window['timeouts']} timed out{errors}; longest gap without an answer "
        f"{fmt(window['max_gap_ms'])} ms; probe max {fmt(window['probe_max_ms'])} ms; "
        f"engine stall {fmt(window['engine_lag_ms'])} ms"
    )


def details(runs: list[Run]) -> str:
    out = []
    for number, run in enumerate(runs, 1):
        out.append(f"{number}. {run.key}: {run.title} ({run.seconds:.0f} s)")
        out.append(f"   engine: {run.engine_package or '-'}")
        if run.settings or run.unsupported:
            out.append(f"   settings {run.settings}; not supported: {run.unsupported or 'none'}")
        if run.error:
            out.append(f"   FAILED: {run.failure}")
        for name in ("before", "during", "after"):
            out.append(_window_line(name, getattr(run, name)))
        if run.outcome is not None:
            out.append(f"   attacker ({run.outcome['who']}): {json.dumps(run.outcome)}")
        for key, value in run.details.items():
            out.append(f"   {key}: {json.dumps(value)}")
    return "\n".join(out)


# --- command line --------------------------------------------------------------------------


def _attack_of(name: str) -> type[Attack]:
    if name.isdigit() and 1 <= int(name) <= len(ATTACKS):
        return ATTACKS[int(name) - 1]
    for attack in ATTACKS:
        if attack.key == name:
            return attack
    names = ", ".join(f"{n} {a.key}" for n, a in enumerate(ATTACKS, 1))
    raise ValueError(f"unknown attack {name!r}; choose from {names}")


def _settings(specs: list[str]) -> dict[type[Attack] | None, dict[str, Any]]:
    """``[ATTACK:]KEY=VALUE`` options by attack (``None``: every attack)."""
    out: dict[type[Attack] | None, dict[str, Any]] = {}
    for spec in specs:
        target, key_value = spec.split(":", 1) if ":" in spec.split("=", 1)[0] else ("", spec)
        key, sep, text = key_value.partition("=")
        if not sep or not key:
            raise ValueError(f"--engine-setting {spec!r}: expected [ATTACK:]KEY=VALUE")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        out.setdefault(_attack_of(target) if target else None, {})[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.attacks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--engine-root", type=Path, default=ROOT, help="checkout of the engine")
    parser.add_argument("--only", default="", help="comma-separated attacks (numbers or names)")
    parser.add_argument("--quick", action="store_true", help="smaller counts and shorter bounds")
    parser.add_argument(
        "--engine-setting",
        action="append",
        default=[],
        metavar="[ATTACK:]KEY=VALUE",
        help="an EngineConfig field for the engine (of one attack); repeatable",
    )
    parser.add_argument("--out", type=Path, help="JSON results file (default: benchmarks/results/)")
    args = parser.parse_args(argv)
    root = args.engine_root.resolve()
    if not (root / "iii_trio").is_dir():
        parser.error(f"{root} is not an iii_trio checkout")
    try:
        wanted = [_attack_of(n.strip()) for n in args.only.split(",") if n.strip()]
        settings = _settings(args.engine_setting)
    except ValueError as exc:
        parser.error(str(exc))
    selected = [a for a in ATTACKS if not wanted or a in wanted]
    sizes = Sizes.quick() if args.quick else Sizes()
    commit = git_commit(root)
    load_start = os.getloadavg()
    print(f"engine: {root} ({commit}); harness and SDK: {ROOT} ({git_commit()})")
    print(f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in load_start)}")

    runs = []
    for attack in selected:
        print(f"\n{ATTACKS.index(attack) + 1}. {attack.key}: {attack.title}", flush=True)
        wishes = attack.engine_settings(sizes) | settings.get(None, {}) | settings.get(attack, {})
        run = trio.run(run_attack, attack, root, wishes, sizes)
        kill_all_children()
        runs.append(run)
        print(f"   {'FAILED' if run.error else 'done'} in {run.seconds:.0f} s", flush=True)

    print("\n" + table(runs) + "\n\n" + details(runs))
    load_end = os.getloadavg()
    print(f"\nload average at the end {' '.join(f'{x:.2f}' for x in load_end)}")
    out = args.out
    if out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = RESULTS_DIR / f"attacks-{stamp}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "created": datetime.datetime.now(datetime.UTC).isoformat(),
        "engine_root": str(root),
        "engine_commit": commit,
        "harness_commit": git_commit(),
        "machine": {"cpus": os.cpu_count(), "load_start": load_start, "load_end": load_end},
        "sizes": attrs.asdict(sizes),
        "runs": [attrs.asdict(run) for run in runs],
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results written to {out}")
    for run in runs:
        if run.error:
            print(f"\n{run.key} failed:\n{run.error}", file=sys.stderr)
    return 1 if any(run.error for run in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
