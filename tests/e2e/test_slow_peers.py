"""Peers that stop reading (issue 12): nobody else waits for them, their engine-side memory
stays under its bound, and the engine applies its stated policy to them.

The attackers are raw WebSocket clients on 127.0.0.1 with a small kernel receive window (so
"does not read" shows up in the engine's outbox after a few KiB rather than after the tens of
MiB Linux would otherwise buffer). Each check of "the others keep being served" is a call that
must complete within a couple of seconds while the attack is on (it takes about a millisecond
when idle; before the fix these calls never completed while the attacker stayed connected).
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import pytest
import trio

import iii_trio
from iii_trio._ws import ConnectionClosed, WebSocket, connect_websocket
from tests.e2e.procs import worker_process
from tests.helpers import MiB, new_id, small_window_dialer

#: The attackers' kernel receive buffer.
SMALL_WINDOW = 32 * 1024
#: How long a healthy call may take while an attack is on (idle: about a millisecond).
HEALTHY = 3.0


async def _stubborn_client(url: str) -> WebSocket:
    """A raw client whose socket takes little before the engine's writes block."""
    dial = small_window_dialer(url, SMALL_WINDOW)
    return await connect_websocket(url + "/", max_message_size=128 * MiB, dialer=dial)


def _invoke(function_id: str, data: Any, **fields: Any) -> str:
    return json.dumps(
        {"type": "invokefunction", "function_id": function_id, "data": data, **fields}
    )


async def _send_quietly(ws: WebSocket, messages: list[str]) -> int:
    """Send until done or until the engine drops us; how many were sent."""
    sent = 0
    try:
        for text in messages:
            await ws.send(text)
            sent += 1
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    return sent


async def _healthy_calls(client: iii_trio.Worker, n: int = 10) -> None:
    for i in range(n):
        with trio.fail_after(HEALTHY):
            assert await client.trigger("probe::echo", {"i": i}) == {"i": i}


async def _serve_echo(worker: iii_trio.Worker) -> None:
    worker.register_function("probe::echo", lambda payload: {"i": payload["i"]})
    await worker.sync()


async def test_a_caller_that_does_not_read_holds_up_nobody() -> None:
    """Before: 800 pipelined 16 KiB calls from a caller that never reads blocked every other
    caller of the same function for as long as it stayed connected. Now its answers wait in
    its own outbox (bounded), and the keepalive drops it."""
    settings: dict[str, Any] = {"outbox_limit": 1 * MiB, "outbox_hard_limit": 64 * MiB}
    async with (
        iii_trio.open_engine(port=0, ping_interval=1.0, ping_timeout=2.0, **settings) as engine,
        iii_trio.connect_worker(engine.url, name="server") as server,
        iii_trio.connect_worker(engine.url, name="client") as client,
    ):
        server.register_function("probe::big", lambda payload: payload)
        await _serve_echo(server)
        attacker = await _stubborn_client(engine.url)
        payload = "x" * 16384
        calls = [_invoke("probe::big", payload, invocation_id=new_id()) for _ in range(800)]
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_send_quietly, attacker, calls)
                # Wait until the attacker's answers pile up in the engine.
                await engine.wait_until(lambda e: e.statistics().outbox_bytes > 2 * MiB)
                await _healthy_calls(client)  # while the attacker is connected and stuck
                stats = engine.statistics()
                assert stats.workers == 3 and stats.outbox_bytes <= settings["outbox_hard_limit"]
                # The policy: it never answers a ping, so the keepalive drops it.
                await engine.wait_until(lambda e: e.statistics().unresponsive_dropped == 1)
        await _healthy_calls(client)
        stats = engine.statistics()
        assert stats.workers == 2
        assert stats.outbox_peak <= settings["outbox_hard_limit"]
        with pytest.raises(ConnectionClosed):  # what it reads ends with a dropped connection
            with trio.fail_after(10):
                while True:
                    await attacker.receive()


async def test_a_worker_that_does_not_read_gets_no_more_calls() -> None:
    """Before: calls routed to a stalled worker filled its outbox, then the engine stopped
    reading the *caller*, which could not even make an unrelated call. Now the caller keeps
    being read, calls to the stalled worker fail at once with worker_overloaded, and the
    keepalive drops the stalled worker, failing what it held with invocation_stopped."""
    settings: dict[str, Any] = {
        "outbox_limit": 256 * 1024,
        "ping_interval": 1.0,
        "ping_timeout": 2.0,
    }
    async with (
        iii_trio.open_engine(port=0, **settings) as engine,
        iii_trio.connect_worker(engine.url, name="server") as server,
        iii_trio.connect_worker(engine.url, name="caller") as caller,
    ):
        await _serve_echo(server)
        stalled = await _stubborn_client(engine.url)
        await stalled.send(json.dumps({"type": "registerfunction", "id": "slow::f"}))
        await engine.wait_function("slow::f")
        payload = "v" * 4096
        with trio.fail_after(30):
            for _ in range(300):  # ~1.2 MB of void calls: more than the worker's outbox takes
                await caller.trigger("slow::f", payload, action="void")
            # The engine still reads the caller: an unrelated call is answered at once.
            await _healthy_calls(caller)
            # A call that wants an answer fails fast instead of queueing.
            with pytest.raises(iii_trio.WorkerOverloaded) as info:
                await caller.trigger("slow::f", payload, timeout=HEALTHY)
            assert info.value.code == "worker_overloaded"
            assert engine.statistics().calls_refused >= 1
            await engine.wait_until(lambda e: e.statistics().unresponsive_dropped == 1)
            with pytest.raises(iii_trio.FunctionNotFound):
                await caller.trigger("slow::f", payload)
        assert engine.statistics().outbox_peak <= 256 * 1024 + 8192
        await stalled.abort()


async def test_timeouts_for_a_caller_that_does_not_read_are_bounded() -> None:
    """Before: each expiry for a non-reading caller spawned a task in the engine's root
    nursery (+360 MiB at 100k calls, never returned). Now the error answers wait in the
    caller's outbox, which is bounded in count too: the caller is dropped as a slow
    consumer and everything it held is released."""
    settings: dict[str, Any] = {"outbox_max_messages": 500, "ping_interval": None}
    async with (
        iii_trio.open_engine(port=0, **settings) as engine,
        iii_trio.connect_worker(engine.url, name="server") as server,
        iii_trio.connect_worker(engine.url, name="client") as client,
    ):

        async def hang(payload: Any) -> None:
            await trio.sleep_forever()

        server.register_function("probe::hang", hang)
        await _serve_echo(server)
        attacker = await _stubborn_client(engine.url)
        calls = [
            _invoke("probe::hang", None, invocation_id=new_id(), timeout_ms=1) for _ in range(5000)
        ]
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_send_quietly, attacker, calls)
                await _healthy_calls(client)
                await engine.wait_until(lambda e: e.statistics().slow_consumers_dropped == 1)
            await engine.wait_until(lambda e: e.statistics().workers == 2)
            await engine.wait_until(lambda e: e.statistics().invocations == 0)
        stats = engine.statistics()
        assert stats.outbox_bytes < 64 * 1024
        await attacker.abort()


async def test_big_answers_to_a_caller_that_does_not_read_are_bounded_in_bytes() -> None:
    """Before: 300 pipelined ``engine::functions::list`` calls, each answered with 4 MiB of
    metadata, grew the engine by 1.2 GiB. Now the caller's outbox is bounded in bytes and the
    caller is dropped as a slow consumer when it is full."""
    hard = 16 * MiB
    async with (
        iii_trio.open_engine(
            port=0, outbox_hard_limit=hard, ping_interval=None, max_function_info=8 * MiB
        ) as engine,
        iii_trio.connect_worker(engine.url, name="server") as server,
        iii_trio.connect_worker(engine.url, name="client") as client,
    ):
        server.register_function("big::meta", lambda p: None, metadata={"blob": "m" * 4 * MiB})
        await _serve_echo(server)
        attacker = await _stubborn_client(engine.url)
        calls = [_invoke("engine::functions::list", {}, invocation_id=new_id()) for _ in range(300)]
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_send_quietly, attacker, calls)
                await _healthy_calls(client, 3)
                await engine.wait_until(lambda e: e.statistics().slow_consumers_dropped == 1)
            await _healthy_calls(client, 3)
        stats = engine.statistics()
        assert stats.outbox_peak <= hard + 5 * MiB  # the bound, plus the one it refused
        await attacker.abort()


async def test_functions_per_worker_are_limited() -> None:
    async with (
        iii_trio.open_engine(port=0, max_functions_per_worker=5) as engine,
        iii_trio.connect_worker(engine.url, name="greedy") as worker,
    ):
        for n in range(6):
            worker.register_function(f"f{n}", lambda p: p)
        with trio.fail_after(5):
            rejection = await worker.wait_rejected("f5")
        assert rejection.code == "limit_exceeded"
        assert engine.statistics().functions == 5


async def test_a_stopped_worker_process_is_detected_by_the_keepalive() -> None:
    """Before: the engine never pinged, so a SIGSTOPped worker held its calls until their
    deadline. Now it is dropped after ping_interval + ping_timeout at most, and its calls
    fail with invocation_stopped."""
    async with (
        iii_trio.open_engine(port=0, ping_interval=0.5, ping_timeout=1.0) as engine,
        iii_trio.connect_worker(engine.url, name="client") as client,
        worker_process(engine.url, "serve", "stopper") as (proc, _),
    ):
        outcome: list[BaseException] = []

        async def call() -> None:
            try:
                await client.trigger("stopper::hang", {}, timeout=60)
            except iii_trio.InvocationError as exc:
                outcome.append(exc)

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(call)
                await engine.wait_until(lambda e: e.statistics().invocations == 1)
                os.kill(proc.pid, signal.SIGSTOP)
                with trio.fail_after(10):
                    await engine.wait_until(lambda e: e.statistics().invocations == 0)
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        assert isinstance(outcome[0], iii_trio.InvocationStopped)
        stats = engine.statistics()
        assert stats.unresponsive_dropped == 1 and stats.workers == 1
