"""The harness side: child processes, /proc readings, results and the table.

Children are started with ``python -m benchmarks.<module>``, talk JSON lines on
stdin/stdout, log to a temporary file (shown when something fails) and die with the harness
(``PR_SET_PDEATHSIG``, plus an ``atexit`` kill of every child still running).
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, Final

import attrs

ROOT: Final = Path(__file__).resolve().parent.parent
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
PAGE_KiB: Final = os.sysconf("SC_PAGE_SIZE") // 1024

_children: list[Child] = []


class BenchError(Exception):
    """A benchmark could not run or its data did not check out."""


def _die_with_parent() -> None:
    # The signal comes when the *thread* that started the child ends, not the process: start
    # children from the main thread (not from ``trio.to_thread``, whose threads come and go).
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Child:
    """One child process speaking JSON lines."""

    def __init__(
        self,
        name: str,
        module: str,
        *args: str,
        env: dict[str, str] | None = None,
        root: Path = ROOT,
    ):
        self.name = name
        self._log: IO[bytes] = tempfile.TemporaryFile(prefix=f"bench-{name}-")  # noqa: SIM115
        full_env = {**os.environ, **(env or {})}
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", f"benchmarks.{module}", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=root,  # ``python -m`` imports benchmarks and iii_trio from there
            env=full_env,
            preexec_fn=_die_with_parent,
        )
        self._lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        _children.append(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self._lines.put(line)
        self._lines.put(b"")

    def log_tail(self, limit: int = 3000) -> str:
        self._log.seek(0)
        text = self._log.read().decode(errors="replace")
        return text[-limit:]

    def read(self, timeout: float) -> dict[str, Any]:
        """The next JSON line. Raises BenchError on timeout, exit, or an ``error`` event."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise BenchError(
                f"{self.name}: no answer within {timeout:.0f}s\n{self.log_tail()}"
            ) from None
        if not line:
            self.popen.wait(5)
            raise BenchError(f"{self.name} exited with {self.popen.returncode}\n{self.log_tail()}")
        obj: dict[str, Any] = json.loads(line)
        if obj.get("event") == "error":
            raise BenchError(f"{self.name}: {obj.get('message')}\n{self.log_tail()}")
        return obj

    def send(self, obj: dict[str, Any] | str) -> None:
        assert self.popen.stdin is not None
        text = obj if isinstance(obj, str) else json.dumps(obj)
        self.popen.stdin.write(text.encode() + b"\n")
        self.popen.stdin.flush()

    def request(self, obj: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.send(obj)
        return self.read(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """EOF on stdin, then wait; kill if it does not exit in time."""
        if self.popen.poll() is None:
            try:
                assert self.popen.stdin is not None
                self.popen.stdin.close()
            except OSError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if self in _children:
            _children.remove(self)
        self._log.close()

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5)


def kill_all_children() -> None:
    for child in list(_children):
        child.kill()
        _children.remove(child)


atexit.register(kill_all_children)


class Group:
    """Children that end together (reverse start order), also when a benchmark fails."""

    def __init__(self) -> None:
        self.children: list[Child] = []

    def start(self, name: str, module: str, *args: str, **kw: Any) -> Child:
        child = Child(name, module, *args, **kw)
        self.children.append(child)
        return child

    def __enter__(self) -> Group:
        return self

    def __exit__(self, *exc: object) -> None:
        for child in reversed(self.children):
            if exc[0] is not None:
                child.kill()
            child.close()


def start_engine(
    group: Group, profile: Path | None = None, *, tune_allocator: bool = True, root: Path = ROOT
) -> tuple[Child, str]:
    """An engine process (``_engine_proc``) run from the checkout ``root``, and its URL."""
    args = ["--cprofile", str(profile)] if profile is not None else []
    if not tune_allocator:
        args.append("--no-tune-allocator")
    engine = group.start("engine", "_engine_proc", *args, root=root)
    ready = engine.read(30)
    return engine, str(ready["url"])


def start_engine_under_test(group: Group, iii_root: Path, settings: dict[str, Any]) -> Child:
    """This checkout's engine process running the engine of the checkout ``iii_root`` with
    :class:`iii_trio.EngineConfig` ``settings`` and its event-loop lag monitor. Its first line
    says ``ready`` (``url``, ``pid``, the ``settings`` used, the ``unsupported`` names).

    Start children from the main thread: they die with the thread that started them."""
    return group.start(
        "engine",
        "_engine_proc",
        "--iii-root",
        str(iii_root),
        "--settings",
        json.dumps(settings),
        "--monitor-lag",
    )


def git_commit(root: Path = ROOT) -> str | None:
    """The short commit of the checkout ``root``, ``+dirty`` if its ``iii_trio`` has changes."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except OSError:
        return None
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "iii_trio"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    ).stdout.strip()
    return (done.stdout.strip() + ("+dirty" if dirty else "")) or None


# --- /proc ---------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak RSS) of a process, in KiB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def reset_peak_rss(pid: int) -> bool:
    """Reset a process's ``VmHWM`` to its current RSS (Linux ``clear_refs`` 5)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


class PeakRss:
    """Peak RSS growth of a process over a block: VmHWM after, minus VmRSS before.

    ``VmHWM`` is reset first when the kernel allows it; VmRSS is also sampled every 20 ms as
    a cross-check (and as the answer when the reset is not allowed).
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before_kib = 0
        self.peak_kib = 0
        self.sampled_peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._reset = False

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            try:
                rss = memory_kib(self.pid)["VmRSS"]
            except (OSError, KeyError):
                return
            self.sampled_peak_kib = max(self.sampled_peak_kib, rss)

    def __enter__(self) -> PeakRss:
        self._reset = reset_peak_rss(self.pid)
        self.before_kib = memory_kib(self.pid)["VmRSS"]
        self.sampled_peak_kib = self.before_kib
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        mem = memory_kib(self.pid)
        self.sampled_peak_kib = max(self.sampled_peak_kib, mem["VmRSS"])
        self.peak_kib = mem["VmHWM"] if self._reset else self.sampled_peak_kib

    @property
    def growth_mib(self) -> float:
        return (self.peak_kib - self.before_kib) / 1024


# --- results -------------------------------------------------------------------------------


@attrs.frozen
class Target:
    """``what`` (``"value"`` or ``"ratio"``) compared with ``op`` to ``limit``."""

    what: str
    op: str
    limit: float

    def met(self, value: float, ratio: float | None) -> bool | None:
        subject = value if self.what == "value" else ratio
        if subject is None:
            return None
        return subject >= self.limit if self.op == ">=" else subject <= self.limit

    def describe(self, unit: str) -> str:
        if self.what == "ratio":
            return f"ratio {self.op} {self.limit:g}"
        return f"{self.op} {self.limit:g} {unit}"


@attrs.define
class Row:
    """One line of the table: our measurements, the baseline's, and the target."""

    benchmark: str
    name: str
    unit: str
    values: list[float]
    baseline: list[float] = attrs.field(factory=list)
    baseline_name: str = ""
    target: Target | None = None
    note: str = ""
    extra: dict[str, Any] = attrs.field(factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def baseline_median(self) -> float | None:
        return statistics.median(self.baseline) if self.baseline else None

    @property
    def ratio(self) -> float | None:
        base = self.baseline_median
        if base is None or base == 0:
            return None
        return self.median / base

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.met(self.median, self.ratio)

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "name": self.name,
            "unit": self.unit,
            "values": self.values,
            "median": self.median,
            "min": min(self.values),
            "max": max(self.values),
            "baseline_name": self.baseline_name or None,
            "baseline_values": self.baseline or None,
            "baseline_median": self.baseline_median,
            "ratio": self.ratio,
            "target": None if self.target is None else self.target.describe(self.unit),
            "met": self.met,
            "note": self.note or None,
            **({"extra": self.extra} if self.extra else {}),
        }


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(rows: Sequence[Row]) -> str:
    header = [
        "benchmark",
        "value (median)",
        "min-max",
        "baseline (median)",
        "ratio",
        "target",
        "met?",
    ]
    lines: list[list[str]] = []
    for row in rows:
        met = {True: "yes", False: "NO", None: "-"}[row.met]
        base = row.baseline_median
        lines.append(
            [
                row.name,
                f"{fmt(row.median)} {row.unit}",
                f"{fmt(min(row.values))}-{fmt(max(row.values))}",
                "-" if base is None else f"{fmt(base)} ({row.baseline_name})",
                "-" if row.ratio is None else f"{row.ratio:.2f}",
                "-" if row.target is None else row.target.describe(row.unit),
                met,
            ]
        )
    return render_table(header, lines)


def render_table(header: list[str], lines: list[list[str]]) -> str:
    """Columns padded to their widest cell, separated by ``|``, a rule under the header."""
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]

    def render(cells: list[str]) -> str:
        return " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    sep = "-+-".join("-" * w for w in widths)
    return "\n".join([render(header), sep, *(render(r) for r in lines)])


def median_of(samples: Sequence[float]) -> float:
    return statistics.median(samples)


class Deadline:
    """The session's time budget: benchmarks check it between repetitions."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def check(self, what: str) -> None:
        if self.left() <= 0:
            raise BenchError(f"out of time budget before {what}")


Progress = Callable[[str], None]
