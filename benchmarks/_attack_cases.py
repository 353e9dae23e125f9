"""The attacks of issue 12, one class each: one peer that stops reading its socket (or is
stopped outright, or simply holds a lot) and what it does to the engine.

Each attack gets a fresh engine and the healthy side (``_attack_peer healthy``). The harness
calls :meth:`Attack.prepare`, measures the healthy calls ("before"), calls :meth:`Attack.run`
while measuring again ("during"; the attacker is still connected at its end), then
:meth:`Attack.leave` (the attacker's outcome is recorded and it goes), and measures once more
("after"). Findings go into ``env.details``; every loop is bounded in count and in time.
"""

from __future__ import annotations

import abc
import json
import os
import signal
import time
from collections import Counter
from typing import Any, ClassVar

import attrs
import trio

from ._attack_kit import Env, PeerClosed, RawPeer, Sizes, invoke, new_id, register
from ._harness import cpu_seconds
from ._trio_peer import PAYLOAD_TEXT


class Attack(abc.ABC):
    key: ClassVar[str]
    title: ClassVar[str]

    def __init__(self, env: Env) -> None:
        self.env = env

    def bound(self, sizes: Sizes) -> float:
        """Seconds :meth:`run` may take at most."""
        return 300.0

    @classmethod
    def engine_settings(cls, sizes: Sizes) -> dict[str, Any]:
        """EngineConfig fields this attack's engine gets unless ``--engine-setting`` says
        otherwise (none: the engine's defaults are what is attacked)."""
        return {}

    async def prepare(self) -> None:
        await trio.lowlevel.checkpoint()

    @abc.abstractmethod
    async def run(self) -> None: ...

    async def leave(self) -> None:
        await trio.lowlevel.checkpoint()


# --- helpers -------------------------------------------------------------------------------


def elapsed(since: float) -> float:
    return round(trio.current_time() - since, 3)


@attrs.define
class Pipeline:
    """Sends pre-encoded ``messages`` as fast as the connection takes them, in batches, and
    records how far it got (a send blocks while the engine does not read)."""

    peer: RawPeer
    messages: list[str]
    batch: int = 64
    sent: int = 0
    started: float = 0.0
    seconds: float | None = None
    error: str | None = None

    async def run(self) -> None:
        self.started = trio.current_time()
        try:
            for start in range(0, len(self.messages), self.batch):
                chunk = self.messages[start : start + self.batch]
                await self.peer.ws.send_many(chunk)
                self.sent += len(chunk)
            self.seconds = elapsed(self.started)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    def report(self) -> dict[str, Any]:
        return {"sent": self.sent, "of": len(self.messages), "send_s": self.seconds} | (
            {"send_error": self.error} if self.error else {}
        )


def encoded(messages: list[dict[str, Any]]) -> list[str]:
    return [json.dumps(m) for m in messages]


async def timed_call(peer: RawPeer, function_id: str, timeout: float = 120.0) -> float:
    """Seconds one call took."""
    t0 = trio.current_time()
    await peer.call(function_id, {}, timeout=timeout)
    return trio.current_time() - t0


async def time_into(times: dict[str, float], name: str, peer: RawPeer, function_id: str) -> None:
    times[name] = round(await timed_call(peer, function_id) * 1000, 1)


@attrs.define
class Prober:
    """Calls ``engine::channels::list`` (answered by the engine itself) back to back on its own
    connection while it runs; the slowest answer is the longest stall a client saw."""

    peer: RawPeer
    calls: int = 0
    worst: float = 0.0

    async def probe_for(self, seconds: float) -> dict[str, Any]:
        self.calls, self.worst = 0, 0.0
        end = trio.current_time() + seconds
        while trio.current_time() < end:
            self.worst = max(self.worst, await timed_call(self.peer, "engine::channels::list"))
            self.calls += 1
            await trio.sleep(0.01)  # sleep-ok: the probe's sampling interval
        return {"probe_calls": self.calls, "probe_max_ms": round(self.worst * 1000, 1)}


# --- 1 -------------------------------------------------------------------------------------


class HolCaller(Attack):
    key = "hol-caller"
    title = "head-of-line, caller side: pipelined 16 KiB calls to probe::echo, never read"

    async def prepare(self) -> None:
        sizes = self.env.sizes
        self.attacker = await self.env.peer()
        data = {"pad": "x" * sizes.hol_payload}
        calls = [invoke("probe::echo", data, call_id=new_id()) for _ in range(sizes.hol_calls)]
        self.pipeline = Pipeline(self.attacker, encoded(calls))

    async def run(self) -> None:
        self.env.nursery.start_soon(self.pipeline.run)
        await trio.sleep(self.env.sizes.hol_hold)
        self.env.details["attacker_sends"] = self.pipeline.report()

    async def leave(self) -> None:
        await self.env.settle("caller that never reads", self.attacker)


# --- 2 -------------------------------------------------------------------------------------


@attrs.define
class CallerProbes:
    """The innocent caller's unrelated ``probe::echo`` calls, each in its own task."""

    peer: RawPeer
    timeout: float
    started: float = attrs.field(factory=trio.current_time)
    latencies: list[float] = attrs.field(factory=list)
    outcomes: Counter[str] = attrs.field(factory=Counter)
    first_timeout_s: float | None = None

    async def one(self) -> None:
        t0 = trio.current_time()
        try:
            answer = await self.peer.call(
                "probe::echo", {"msg": PAYLOAD_TEXT}, timeout=self.timeout
            )
        except trio.TooSlowError:
            self.outcomes["timed out"] += 1
            if self.first_timeout_s is None:
                self.first_timeout_s = round(t0 - self.started, 3)
            return
        except PeerClosed:
            self.outcomes["connection closed"] += 1
            return
        error = answer.get("error")
        if isinstance(error, dict):
            self.outcomes[f"error:{error.get('code')}"] += 1
            return
        self.outcomes["ok"] += 1
        self.latencies.append(trio.current_time() - t0)

    def report(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        return {
            "unrelated_calls": dict(self.outcomes),
            "unrelated_ok_p50_ms": round(ordered[len(ordered) // 2] * 1000, 2) if ordered else None,
            "unrelated_ok_max_ms": round(ordered[-1] * 1000, 2) if ordered else None,
            "first_unrelated_timeout_at_s": self.first_timeout_s,
        }


@attrs.define
class Flood:
    """The innocent caller's void calls, one send each, as fast as the engine takes them;
    before every ``probe_every``-th, an unrelated call starts in its own task."""

    peer: RawPeer
    message: str
    count: int
    probe_every: int
    probes: CallerProbes
    sent: int = 0
    #: When the send in progress started (``None`` between sends).
    sending_since: float | None = None
    longest_send: float = 0.0
    error: str | None = None
    stopping: bool = False
    done: trio.Event = attrs.field(factory=trio.Event)

    async def run(self, nursery: trio.Nursery) -> None:
        try:
            for n in range(self.count):
                if self.stopping:
                    return
                if n % self.probe_every == 0:
                    nursery.start_soon(self.probes.one)
                self.sending_since = t0 = trio.current_time()
                await self.peer.ws.send(self.message)
                self.sending_since = None
                self.longest_send = max(self.longest_send, trio.current_time() - t0)
                self.sent += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.done.set()

    def report(self) -> dict[str, Any]:
        """``blocked_since_s``: when the send still in progress started, if it has waited for
        more than a second (the engine stopped reading the caller)."""
        since = self.sending_since
        blocked = since is not None and trio.current_time() - since > 1.0
        return {
            "void_sent": self.sent,
            "void_of": self.count,
            "longest_finished_send_s": round(self.longest_send, 3),
            "blocked_since_s": round(since - self.probes.started, 3)
            if blocked and since is not None
            else None,
        } | ({"send_error": self.error} if self.error else {})


class HolExecutor(Attack):
    key = "hol-executor"
    title = "head-of-line, executor side: void 4 KiB calls to a worker that stopped reading"

    def bound(self, sizes: Sizes) -> float:
        return sizes.void_seconds + 2 * sizes.call_timeout + 30

    async def prepare(self) -> None:
        self.slow = await self.env.peer()
        await self.slow.send([register("slow::f")])
        await self.slow.barrier()  # from here on it reads nothing
        self.caller = await self.env.peer(reading=True)

    async def run(self) -> None:
        sizes = self.env.sizes
        void = json.dumps(invoke("slow::f", {"pad": "x" * sizes.void_payload}, void=True))
        probes = CallerProbes(self.caller, sizes.call_timeout)
        flood = Flood(self.caller, void, sizes.void_calls, sizes.void_probe_every, probes)
        # In the background: a send the engine does not take stays pending at the end
        # (cancelling it would kill the innocent caller's connection).
        self.env.nursery.start_soon(flood.run, self.env.nursery)
        with trio.move_on_after(sizes.void_seconds):
            await flood.done.wait()
        flood.stopping = True
        report = flood.report() | {"flood_s": elapsed(probes.started)}
        await trio.sleep(sizes.call_timeout + 0.5)  # sleep-ok: the last probes time out
        self.env.details["innocent_caller"] = (
            report | probes.report() | {"read": dict(self.caller.seen)}
        )

    async def leave(self) -> None:
        await self.env.settle("worker that stopped reading", self.slow)


# --- 3 -------------------------------------------------------------------------------------


class TaskPerMessage(Attack):
    key = "task-per-message"
    title = "a task per message: calls with timeout_ms=1 from a caller that never reads"

    #: Seconds the attacker may take to send its calls.
    SEND_BOUND = 180.0

    def bound(self, sizes: Sizes) -> float:
        return self.SEND_BOUND + sizes.timeout_hold + 30

    async def prepare(self) -> None:
        # sink::f reads everything and never answers: every call times out after 1 ms, and
        # each timeout is a message for the caller that does not read.
        self.sink = await self.env.peer(reading=True)
        await self.sink.send([register("sink::f")])
        await self.sink.barrier()
        self.attacker = await self.env.peer()
        calls = [
            invoke("sink::f", {"n": n}, call_id=new_id(), timeout_ms=1)
            for n in range(self.env.sizes.timeout_calls)
        ]
        self.pipeline = Pipeline(self.attacker, encoded(calls), batch=500)

    async def run(self) -> None:
        with trio.move_on_after(self.SEND_BOUND):
            await self.pipeline.run()
        rss_sent = self.env.engine.rss_kib()
        await trio.sleep(self.env.sizes.timeout_hold)
        self.env.details["attacker_sends"] = self.pipeline.report()
        self.env.details["engine_rss_mib"] = {
            "when_all_sent": round(rss_sent / 1024, 1),
            "after_hold": round(self.env.engine.rss_kib() / 1024, 1),
        }
        self.env.details["sink_received"] = self.sink.seen["invokefunction"]

    async def leave(self) -> None:
        await self.env.settle("caller that never reads", self.attacker)


# --- 4 -------------------------------------------------------------------------------------


class OutboxBytes(Attack):
    key = "outbox-bytes"
    title = "outboxes bounded in messages: engine::functions::list of 4 MiB, never read"

    async def prepare(self) -> None:
        sizes = self.env.sizes
        big = await self.env.peer(reading=True)
        await big.send([register("big::f", metadata={"blob": "m" * sizes.metadata_bytes})])
        await big.barrier()
        self.attacker = await self.env.peer()
        calls = [
            invoke("engine::functions::list", {}, call_id=new_id()) for _ in range(sizes.list_calls)
        ]
        self.pipeline = Pipeline(self.attacker, encoded(calls))

    async def run(self) -> None:
        self.env.nursery.start_soon(self.pipeline.run)
        await trio.sleep(self.env.sizes.list_hold)
        self.env.details["attacker_sends"] = self.pipeline.report()

    async def leave(self) -> None:
        await self.env.settle("caller that never reads", self.attacker)


# --- 5 -------------------------------------------------------------------------------------


class WorkersTimesFunctions(Attack):
    key = "workers-x-functions"
    title = "O(workers x functions): idle workers, engine::workers::list, mass disconnect"

    def bound(self, sizes: Sizes) -> float:
        return 900.0

    async def run(self) -> None:
        env = self.env
        sizes = env.sizes
        self.prober = Prober(await env.peer(reading=True))
        idle = await self._connect_idle(sizes.idle_workers, sizes.functions_per_worker)
        await self._list_while_probing()
        await self._disconnect(idle[: sizes.disconnect])
        await self._many_functions(sizes.many_functions)

    async def _connect_idle(self, workers: int, functions: int) -> list[RawPeer]:
        t0 = trio.current_time()
        idle: list[RawPeer] = []
        limiter = trio.CapacityLimiter(50)

        async def one(index: int) -> None:
            async with limiter:
                peer = await self.env.peer(reading=True)  # answers pings: idle, not dead
                await peer.send([register(f"idle{index}::f{j}") for j in range(functions)])
                await peer.barrier()
                idle.append(peer)

        async with trio.open_nursery() as nursery:
            for index in range(workers):
                nursery.start_soon(one, index)
        self.env.details["idle_workers"] = {
            "workers": len(idle),
            "functions_each": functions,
            "connect_and_register_s": elapsed(t0),
        }
        return idle

    async def _list_while_probing(self) -> None:
        """``engine::workers::list`` and, at the same moment on another connection, a call
        the engine answers itself: how long the list takes, and the freeze the probe sees."""
        await self.env.engine.lag_ms()
        rounds = []
        for _ in range(3):
            times: dict[str, float] = {}
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    time_into, times, "list_ms", self.env.observer, "engine::workers::list"
                )
                nursery.start_soon(
                    time_into, times, "probe_ms", self.prober.peer, "engine::channels::list"
                )
            rounds.append(times)
        self.env.details["workers_list"] = {
            "rounds": rounds,
            "engine_lag_ms": round(await self.env.engine.lag_ms(), 1),
        }

    async def _disconnect(self, victims: list[RawPeer]) -> None:
        """Drop ``victims`` at once; probe the engine for 5 s while it cleans up."""
        await self.env.engine.lag_ms()
        for peer in victims:
            await peer.abort()
        probe = await self.prober.probe_for(5.0)
        self.env.details["mass_disconnect"] = {
            "disconnected": len(victims),
            **probe,
            "engine_lag_ms": round(await self.env.engine.lag_ms(), 1),
            "workers_left": len(await self.env.workers()),
        }

    async def _many_functions(self, count: int) -> None:
        """One worker registers ``count`` functions, then goes (and its functions with it)."""
        env = self.env
        peer = await env.peer()
        messages = encoded([register(f"many::f{j}") for j in range(count)])
        await env.engine.lag_ms()
        cpu0, own_cpu0 = cpu_seconds(env.engine.pid), time.process_time()
        report: dict[str, Any] = {}
        done = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._probe_until, done, report)
            t0 = trio.current_time()
            pipeline = Pipeline(peer, messages, batch=1000)
            await pipeline.run()
            try:
                await peer.barrier(timeout=300.0)
                report["registered_s"] = elapsed(t0)
            except PeerClosed:
                report["registered_s"] = None
            report["engine_cpu_s"] = round(cpu_seconds(env.engine.pid) - cpu0, 2)
            report["harness_cpu_s"] = round(time.process_time() - own_cpu0, 2)
            done.set()
        report.update(pipeline.report(), engine_lag_ms=round(await env.engine.lag_ms(), 1))
        report["read"] = dict(peer.seen)
        rows = [row for row in await env.workers() if row["id"] == peer.worker_id]
        report["accepted"] = rows[0]["function_count"] if rows else None
        await env.settle("worker registering many functions", peer)
        closed = f", closed {peer.close_code}" if peer.close_code is not None else ""
        env.verdict = (
            f"{report['accepted']}/{count} functions in {report['registered_s']} s{closed}"
        )
        removal = await self.prober.probe_for(3.0)
        report["removal"] = removal | {"engine_lag_ms": round(await env.engine.lag_ms(), 1)}
        env.details["many_functions"] = report

    async def _probe_until(self, done: trio.Event, report: dict[str, Any]) -> None:
        worst = 0.0
        while not done.is_set():
            worst = max(worst, (await self.prober.probe_for(0.5))["probe_max_ms"])
        report["probe_max_ms"] = worst


# --- 6 -------------------------------------------------------------------------------------


class Liveness(Attack):
    key = "liveness"
    title = "liveness: a worker SIGSTOPped with a call in flight"

    def bound(self, sizes: Sizes) -> float:
        return sizes.liveness_bound + 60

    @classmethod
    def engine_settings(cls, sizes: Sizes) -> dict[str, Any]:
        # The default keepalive finds a stopped worker within ping_interval + ping_timeout
        # (40 s): longer than the quick bound, so --quick runs it four times faster.
        if sizes.liveness_bound < 45:
            return {"ping_interval": 5.0, "ping_timeout": 5.0}
        return {}

    async def prepare(self) -> None:
        env = self.env
        self.worker = env.group.start("stopped", "_attack_peer", "stopped", "--url", env.url)
        ready = await trio.to_thread.run_sync(self.worker.read, 60.0)
        self.worker_id = str(ready["worker_id"])
        self.caller = await env.peer(reading=True)

    async def run(self) -> None:
        env = self.env
        bound = env.sizes.liveness_bound
        os.kill(self.worker.pid, signal.SIGSTOP)
        t0 = trio.current_time()
        call: dict[str, Any] = {}

        async def call_it() -> None:
            try:
                answer = await self.caller.call("stopped::f", {}, timeout=bound)
            except trio.TooSlowError:
                call["outcome"] = f"no answer within {bound:g} s"
                return
            except PeerClosed as exc:
                call["outcome"] = f"caller's connection closed: {exc}"
                return
            error = answer.get("error")
            call["outcome"] = f"error:{error.get('code')}" if isinstance(error, dict) else "result"
            call["after_s"] = elapsed(t0)

        gone_after: float | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call_it)
            with trio.move_on_after(bound):
                while gone_after is None or not call:
                    if gone_after is None and not await self._listed():
                        gone_after = elapsed(t0)
                    await trio.sleep(1.0)  # sleep-ok: polling engine::workers::list
        env.details["stopped_worker"] = {
            "call": call,
            "unlisted_after_s": gone_after,
            "bound_s": bound,
        }
        env.verdict = (
            f"not detected within {bound:g} s"
            if gone_after is None
            else f"unlisted after {gone_after:g} s; call {call.get('outcome')}"
        )

    async def _listed(self) -> bool:
        return self.worker_id in {row["id"] for row in await self.env.workers()}

    async def leave(self) -> None:
        os.kill(self.worker.pid, signal.SIGCONT)
        self.worker.kill()
        await trio.lowlevel.checkpoint()


# --- 7 -------------------------------------------------------------------------------------


class ParseBomb(Attack):
    key = "parse-bomb"
    title = 'a parse bomb: one {"type":"ping","x":[[],[],...]} text message (79 MiB; quick 20)'

    def bound(self, sizes: Sizes) -> float:
        return 120.0 + sizes.bomb_hold

    async def prepare(self) -> None:
        count = self.env.sizes.bomb_bytes // 3
        self.bomb = '{"type":"ping","x":[' + "[]," * count + "[]]}"
        self.attacker = await self.env.peer()

    async def run(self) -> None:
        t0 = trio.current_time()
        await self.attacker.ws.send(self.bomb)
        sent = elapsed(t0)
        # The answer (an error, or a pong if the engine skips what it does not need) is read
        # when the attacker leaves; meanwhile the healthy side goes on being measured.
        await trio.sleep(self.env.sizes.bomb_hold)
        self.env.details["bomb"] = {
            "bytes": len(self.bomb),
            "send_s": sent,
            "engine_rss_mib_after_hold": round(self.env.engine.rss_kib() / 1024, 1),
        }

    async def leave(self) -> None:
        await self.env.settle("parse bomb sender", self.attacker)


ATTACKS: tuple[type[Attack], ...] = (
    HolCaller,
    HolExecutor,
    TaskPerMessage,
    OutboxBytes,
    WorkersTimesFunctions,
    Liveness,
    ParseBomb,
)
