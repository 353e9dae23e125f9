"""The well-behaved side of ``benchmarks.attacks``: this checkout's iii_trio SDK, in its own
process, driven by the harness through stdin/stdout JSON lines.

usage: python -m benchmarks._attack_peer ROLE --url URL [options]

* ``healthy``: one connection serves ``probe::echo`` (answers with its payload); ``--callers``
  other connections call it back to back, one call in flight each, giving up on a call after
  ``--call-timeout`` seconds; one more connection calls ``engine::channels::list`` (answered
  by the engine itself, no worker involved) every 20 ms to see the engine's own stalls.
  ``{"cmd": "start"}`` starts a measuring window, ``{"cmd": "stop"}`` ends it and answers with
  its statistics (see :meth:`Window.summary`).
* ``stopped``: serves ``stopped::f`` and prints its pid, for the harness to SIGSTOP it.

Every role prints ``{"event": "ready"}`` first and stops at EOF on stdin.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import math
import os
import sys
from collections import Counter
from typing import Any, Final

import attrs
import trio

import iii_trio

from ._common import emit, now
from ._trio_peer import PAYLOAD_TEXT, probe, stdin_lines, wait_stdin_eof

#: Seconds between two calls of the stall probe.
PROBE_INTERVAL: Final = 0.02


async def echo(data: Any) -> Any:
    return data


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms_or_none(seconds: float) -> float | None:
    """Milliseconds; ``None`` for a call that timed out (JSON has no infinity)."""
    return None if math.isinf(seconds) else seconds * 1000


@attrs.define
class Window:
    """Calls made between ``start`` and ``stop``, and what became of them."""

    call_timeout: float
    started: float = attrs.field(factory=now)
    #: Seconds per finished call; a call that timed out counts as ``inf``.
    latencies: list[float] = attrs.field(factory=list)
    errors: Counter[str] = attrs.field(factory=Counter)
    #: When each successful call returned.
    completions: list[float] = attrs.field(factory=list)
    probe_calls: int = 0
    probe_worst: float = 0.0
    stopping: trio.Event = attrs.field(factory=trio.Event)
    done: trio.Event = attrs.field(factory=trio.Event)
    ended: float = 0.0
    _probe_scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)

    async def run(
        self,
        callers: list[iii_trio.Worker],
        prober: iii_trio.Worker,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            async with trio.open_nursery() as nursery:
                for index, caller in enumerate(callers):
                    nursery.start_soon(self._call_loop, caller, index)
                nursery.start_soon(self._probe_loop, prober)
                task_status.started()
                await self.stopping.wait()  # callers finish the call in hand, then end
        finally:
            self.done.set()

    async def _call_loop(self, worker: iii_trio.Worker, index: int) -> None:
        n = 0
        while not self.stopping.is_set():
            n += 1
            t0 = now()
            try:
                await worker.trigger(
                    "probe::echo", {"msg": PAYLOAD_TEXT, "n": n}, timeout=self.call_timeout
                )
            except iii_trio.InvocationTimeout:
                self.latencies.append(math.inf)
                continue
            except iii_trio.InvocationError as exc:
                self.errors[exc.code] += 1
                await trio.sleep(0.01)  # sleep-ok: do not spin on a refusing engine
                continue
            t1 = now()
            self.latencies.append(t1 - t0)
            self.completions.append(t1)

    async def _probe_loop(self, worker: iii_trio.Worker) -> None:
        with self._probe_scope:
            while True:
                t0 = now()
                try:
                    await worker.trigger("engine::channels::list", {}, timeout=math.inf)
                finally:  # also when stopped: a call still in flight is a stall of its age
                    self.probe_worst = max(self.probe_worst, now() - t0)
                self.probe_calls += 1
                await trio.sleep(PROBE_INTERVAL)  # sleep-ok: the probe's sampling interval

    async def stop(self) -> dict[str, Any]:
        self.ended = now()
        self.stopping.set()
        self._probe_scope.cancel()
        await self.done.wait()
        return self.summary()

    def summary(self) -> dict[str, Any]:
        """p50/p99/max count a timed-out call as longer than any other (``None``);
        ``max_gap_ms`` is the longest time in the window without a successful call."""
        ordered = sorted(self.latencies)
        marks = [self.started, *sorted(t for t in self.completions if t <= self.ended), self.ended]
        first_ok = self.completions[0] - self.started if self.completions else None
        return {
            "seconds": self.ended - self.started,
            "calls": len(ordered),
            "ok": len(self.completions),
            "timeouts": sum(math.isinf(x) for x in ordered),
            "errors": dict(self.errors),
            "p50_ms": ms_or_none(percentile(ordered, 0.5)) if ordered else None,
            "p99_ms": ms_or_none(percentile(ordered, 0.99)) if ordered else None,
            "max_ms": ms_or_none(ordered[-1]) if ordered else None,
            "first_ok_ms": None if first_ok is None else first_ok * 1000,
            "max_gap_ms": max(b - a for a, b in itertools.pairwise(marks)) * 1000,
            "probe_calls": self.probe_calls,
            "probe_max_ms": self.probe_worst * 1000,
        }


async def healthy(args: argparse.Namespace) -> None:
    async with contextlib.AsyncExitStack() as stack:

        async def connect(name: str) -> iii_trio.Worker:
            return await stack.enter_async_context(
                iii_trio.connect_worker(args.url, name=name, reconnect=False)
            )

        server = await connect("probe-echo")
        server.register_function("probe::echo", echo)
        callers = [await connect(f"probe-caller-{i}") for i in range(args.callers)]
        prober = await connect("probe-stall")
        await probe(callers[0], "probe::echo", {"msg": "ready"})
        emit({"event": "ready"})
        async with trio.open_nursery() as nursery:
            window: Window | None = None
            async for line in stdin_lines():
                cmd = json.loads(line)["cmd"]
                if cmd == "start":
                    window = Window(call_timeout=args.call_timeout)
                    await nursery.start(window.run, callers, prober)
                    emit({"event": "started"})
                elif cmd == "stop" and window is not None:
                    emit({"event": "window", **await window.stop()})
                    window = None
            nursery.cancel_scope.cancel()


async def stopped(args: argparse.Namespace) -> None:
    async def answer(data: Any) -> dict[str, bool]:
        return {"ok": True}

    async with iii_trio.connect_worker(args.url, name=args.name, reconnect=False) as worker:
        worker.register_function("stopped::f", answer)
        await probe(worker, "stopped::f", None)
        emit({"event": "ready", "pid": os.getpid(), "worker_id": worker.worker_id})
        await wait_stdin_eof()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("role", choices=["healthy", "stopped"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--callers", type=int, default=3)
    parser.add_argument("--call-timeout", type=float, default=2.0)
    parser.add_argument("--name", default="attack-stopped")
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    roles = {"healthy": healthy, "stopped": stopped}
    trio.run(roles[args.role], args)


if __name__ == "__main__":
    main()
