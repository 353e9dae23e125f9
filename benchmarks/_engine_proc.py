"""An iii_trio engine in its own process, for the benchmarks.

usage: python -m benchmarks._engine_proc [--cprofile FILE] [--no-tune-allocator]
           [--iii-root DIR] [--settings JSON] [--monitor-lag]

Listens on 127.0.0.1, port 0; prints ``{"event": "ready", "url": ..., "pid": ...}`` once
listening; stops at EOF on stdin (or SIGINT/SIGTERM). With ``--cprofile`` the whole run is
profiled and the stats are written to FILE at exit. Like the ``iii-trio engine`` command, it
calls :func:`iii_trio.tune_allocator` first, unless told not to.

For comparing engine versions (``benchmarks.attacks``):

* ``--iii-root DIR`` imports ``iii_trio`` from the checkout ``DIR`` (this module stays this
  checkout's), so any version of the engine runs under the same harness.
* ``--settings JSON`` are :class:`iii_trio.EngineConfig` fields. Those the engine does not
  have are left out and listed under ``"unsupported"`` in the ready line; a value the engine
  refuses ends the process with an ``{"event": "error"}`` line.
* ``--monitor-lag`` runs a task beside the engine that asks to wake every 10 ms and keeps the
  largest delay of a wake-up: the longest time the event loop did not get round to it. A line
  ``{"cmd": "lag"}`` on stdin is answered with ``{"event": "lag", "max_ms": ...}`` and resets
  it; the answer comes from the stdin thread, so also while the loop is stalled.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import inspect
import json
import logging
import os
import signal
import sys
import threading
import time
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from ._common import emit

if TYPE_CHECKING:
    from types import ModuleType

    import iii_trio

#: Seconds between the lag monitor's wake-ups.
LAG_TICK: Final = 0.01
#: Where and how the engine listens: not for ``--settings`` to change.
_FIXED: Final = frozenset({"host", "port"})


@attrs.define
class LagMonitor:
    """The longest delay of a wake-up since the last :meth:`take` (seconds)."""

    worst: float = 0.0

    async def run(self) -> None:
        while True:
            asked = time.monotonic() + LAG_TICK
            await trio.sleep(LAG_TICK)
            self.worst = max(self.worst, time.monotonic() - asked)

    def take(self) -> float:
        worst, self.worst = self.worst, 0.0  # from another thread: a lost update costs a tick
        return worst


def import_iii(root: str | None) -> ModuleType:
    """``iii_trio``, from the checkout ``root`` if given (before anything imported it)."""
    if root is not None:
        sys.path.insert(0, os.path.abspath(root))
    import iii_trio as iii

    return iii


def split_settings(iii: ModuleType, wanted: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The settings this engine version has, and the names of those it has not."""
    config = getattr(iii, "EngineConfig", None)
    if config is not None and attrs.has(config):
        known = {field.name for field in attrs.fields(config)}
    else:
        known = set(inspect.signature(iii.serve_engine).parameters)
    known -= _FIXED
    usable = {k: v for k, v in wanted.items() if k in known}
    return usable, sorted(set(wanted) - set(usable))


def _serve_stdin(token: trio.lowlevel.TrioToken, stop: trio.CancelScope, lag: LagMonitor) -> None:
    """Answer ``lag`` commands until EOF on stdin, then stop the engine."""
    for line in sys.stdin.buffer:
        try:
            cmd = json.loads(line)
        except ValueError:
            continue
        if isinstance(cmd, dict) and cmd.get("cmd") == "lag":
            emit({"event": "lag", "max_ms": lag.take() * 1000})
    with contextlib.suppress(trio.RunFinishedError):
        token.run_sync_soon(stop.cancel)


async def _main(
    iii: ModuleType,
    settings: dict[str, Any],
    profile: cProfile.Profile | None,
    monitor_lag: bool,
) -> None:
    usable, unsupported = split_settings(iii, settings)
    lag = LagMonitor()
    async with trio.open_nursery() as nursery:
        try:
            engine: iii_trio.Engine = await nursery.start(
                partial(iii.serve_engine, host="127.0.0.1", port=0, **usable)
            )
        except (TypeError, ValueError) as exc:
            emit({"event": "error", "message": f"the engine refused {usable}: {exc}"})
            raise
        if monitor_lag:
            nursery.start_soon(lag.run)
        emit(
            {
                "event": "ready",
                "url": engine.url,
                "pid": os.getpid(),
                "iii_trio": os.path.dirname(str(iii.__file__)),
                "version": getattr(iii, "__version__", None),
                "settings": usable,
                "unsupported": unsupported,
            }
        )
        token = trio.lowlevel.current_trio_token()
        args = (token, nursery.cancel_scope, lag)
        threading.Thread(target=_serve_stdin, args=args, daemon=True).start()
        if profile is not None:
            profile.enable()
        try:
            await trio.sleep_forever()
        finally:
            if profile is not None:
                profile.disable()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cprofile", help="write cProfile stats of the run to this file")
    parser.add_argument(
        "--no-tune-allocator",
        dest="tune_allocator",
        action="store_false",
        help="keep glibc's malloc defaults (the iii-trio engine command tunes them)",
    )
    parser.add_argument("--iii-root", help="import iii_trio from this checkout")
    parser.add_argument("--settings", default="{}", help="EngineConfig fields, as JSON")
    parser.add_argument("--monitor-lag", action="store_true", help="measure event-loop stalls")
    args = parser.parse_args()
    iii = import_iii(args.iii_root)
    if args.tune_allocator and hasattr(iii, "tune_allocator"):
        iii.tune_allocator()  # as ``iii-trio engine`` does
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)

    def stop(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    # CPU time of the (single) trio thread, not wall time: on a shared 2-core machine the wall
    # clock mostly measures waiting for a CPU.
    profile = cProfile.Profile(time.thread_time) if args.cprofile else None
    try:
        trio.run(_main, iii, json.loads(args.settings), profile, args.monitor_lag)
    except KeyboardInterrupt:
        pass
    finally:
        if profile is not None:
            profile.disable()
            profile.dump_stats(args.cprofile)


if __name__ == "__main__":
    main()
