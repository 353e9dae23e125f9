"""Workers in other processes, killed workers, an engine that restarts, and the token."""

from __future__ import annotations

import os
import signal
import socket

import pytest
import trio

import iii_trio
from iii_trio._ws import HandshakeError, connect_websocket
from tests.e2e.procs import worker_process


async def test_two_worker_processes(iii_engine, iii_worker) -> None:
    async with (
        worker_process(iii_engine.url, "serve", "alpha") as (alpha, a_ready),
        worker_process(iii_engine.url, "serve", "beta") as (beta, b_ready),
    ):
        client = await iii_worker(name="client")
        with trio.fail_after(10):
            a = await client.trigger("alpha::echo", {"n": 1})
            b = await client.trigger("beta::echo", {"n": 2})
        assert a["pid"] == a_ready["pid"] == alpha.pid
        assert b["pid"] == b_ready["pid"] == beta.pid
        assert a["echo"]["n"] == 1 and b["echo"]["n"] == 2


async def test_killed_worker_process_fails_its_calls_within_a_second(
    iii_engine, iii_worker
) -> None:
    client = await iii_worker(name="client")
    async with worker_process(iii_engine.url, "serve", "victim") as (proc, _):
        async with trio.open_nursery() as nursery:
            outcome: list[BaseException] = []

            async def call() -> None:
                try:
                    await client.trigger("victim::hang", {}, timeout=60)
                except iii_trio.InvocationError as exc:
                    outcome.append(exc)

            nursery.start_soon(call)
            await iii_engine.wait_until(lambda e: e.statistics().invocations == 1)
            os.kill(proc.pid, signal.SIGKILL)
            with trio.fail_after(1):
                await iii_engine.wait_until(lambda e: e.statistics().invocations == 0)
        assert isinstance(outcome[0], iii_trio.InvocationStopped)
    with trio.fail_after(5):
        await iii_engine.wait_until(
            lambda e: e._router.functions.lookup("default", "victim::echo") is None
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_engine_restart_reconnects_and_replays_registrations(nursery) -> None:
    port = _free_port()
    url = f"ws://127.0.0.1:{port}"
    first_engine = trio.CancelScope()
    started = trio.Event()
    engine_box: list[iii_trio.Engine] = []

    async def run_engine(scope: trio.CancelScope, ready: trio.Event) -> None:
        with scope:
            async with iii_trio.open_engine(port=port) as engine:
                engine_box.append(engine)
                ready.set()
                await trio.sleep_forever()

    nursery.start_soon(run_engine, first_engine, started)
    await started.wait()
    hung = trio.Event()

    async def hang(payload):
        hung.set()
        await trio.sleep_forever()

    async with (
        iii_trio.connect_worker(url, name="server") as server,
        iii_trio.connect_worker(url, name="client") as client,
    ):
        server.register_function("svc::hang", hang)
        server.register_function("svc::ping", lambda p: "pong")
        await engine_box[0].wait_function("svc::ping")
        async with trio.open_nursery() as calls:
            failures: list[BaseException] = []

            async def call() -> None:
                try:
                    await client.trigger("svc::hang", {}, timeout=60)
                except iii_trio.InvocationError as exc:
                    failures.append(exc)

            calls.start_soon(call)
            with trio.fail_after(5):
                await hung.wait()
                first_engine.cancel()  # the engine goes away
        # in-flight calls failed at once, not at their 60 s timeout
        assert isinstance(failures[0], iii_trio.WorkerDisconnected | iii_trio.InvocationStopped)
        # a new engine on the same port: both workers come back and re-register
        second_started = trio.Event()
        nursery.start_soon(run_engine, trio.CancelScope(), second_started)
        with trio.fail_after(20):
            await second_started.wait()
            await engine_box[1].wait_function("svc::ping")
            assert await client.trigger("svc::ping", {}) == "pong"
        assert server.connections == 2 and client.connections == 2


async def test_token_is_required_everywhere() -> None:
    async with iii_trio.open_engine(port=0, token="s3cret") as engine:
        with trio.fail_after(10):
            with pytest.raises(HandshakeError) as info:
                await connect_websocket(engine.url, max_message_size=1024)
            assert info.value.status == 401
            with pytest.raises(HandshakeError):
                await connect_websocket(
                    engine.url, max_message_size=1024, headers=[("Authorization", "Bearer wrong")]
                )
            async with iii_trio.connect_worker(engine.url, token="s3cret") as worker:
                worker.register_function("t::ok", lambda p: "ok")
                await engine.wait_function("t::ok")
                assert await worker.trigger("t::ok", {}) == "ok"
                # channel sockets need the token too; the SDK sends it
                channel = await worker.create_channel()
                ref = channel.reader_ref
                with pytest.raises(HandshakeError) as channel_info:
                    await connect_websocket(
                        f"{engine.url}/ws/channels/{ref.channel_id}?key={ref.access_key}&dir=read",
                        max_message_size=1024,
                    )
                assert channel_info.value.status == 401
                await channel.writer.send_all(b"with token")
                await channel.writer.aclose()
                assert await channel.reader.read_all() == b"with token"


async def test_secrets_never_reach_the_logs(caplog) -> None:
    caplog.set_level("DEBUG")
    async with iii_trio.open_engine(port=0, token="tok-very-secret") as engine:
        async with iii_trio.connect_worker(engine.url, token="tok-very-secret") as worker:
            channel = await worker.create_channel()
            await channel.writer.send_all(b"x")
            await channel.writer.aclose()
            assert await channel.reader.read_all() == b"x"
            with pytest.raises(HandshakeError):  # a wrong key is logged as a refusal
                await connect_websocket(
                    f"{engine.url}/ws/channels/{channel.reader_ref.channel_id}?key={channel.reader_ref.access_key}x&dir=read",
                    max_message_size=1024,
                    headers=[("Authorization", "Bearer tok-very-secret")],
                )
            keys = {channel.reader_ref.access_key, channel.writer_ref.access_key, "tok-very-secret"}
    text = caplog.text
    assert "refused" in text  # the refusal was logged...
    for secret in keys:
        assert secret not in text  # ...without the key or the token


async def test_graceful_shutdown_drains_then_tells_everyone() -> None:
    async with iii_trio.open_engine(port=0, shutdown_timeout=5) as engine:
        release = trio.Event()
        entered = trio.Event()

        async def slow(payload):
            entered.set()
            await release.wait()
            return "finished"

        async def forever(payload):
            await trio.sleep_forever()

        async with (
            iii_trio.connect_worker(engine.url, name="server", reconnect=False) as server,
            iii_trio.connect_worker(engine.url, name="client") as client,
        ):
            server.register_function("s::slow", slow)
            server.register_function("s::forever", forever)
            await engine.wait_function("s::forever")
            channel = await client.create_channel()
            await channel.writer.send_all(b"in flight")
            assert await channel.reader.receive_some() == b"in flight"
            results: dict[str, object] = {}
            with trio.fail_after(15):
                async with trio.open_nursery() as nursery:

                    async def call(name: str) -> None:
                        try:
                            results[name] = await client.trigger(name, {}, timeout=60)
                        except iii_trio.InvocationError as exc:
                            results[name] = exc.code

                    nursery.start_soon(call, "s::slow")
                    nursery.start_soon(call, "s::forever")
                    await entered.wait()
                    await engine.wait_until(lambda e: e.statistics().invocations == 2)
                    nursery.start_soon(engine.shutdown, 0.5)
                    await engine.wait_until(lambda e: e.shutting_down)
                    with pytest.raises(iii_trio.InvocationError) as refused:
                        await client.trigger("s::slow", {})
                    assert refused.value.code == "engine_shutdown"
                    release.set()  # the slow call finishes inside the drain window
                assert results["s::slow"] == "finished"
                assert (
                    results["s::forever"] == "invocation_stopped"
                )  # still running at the deadline
                # the reader of a channel still open sees the engine going away, not a clean end
                with pytest.raises(iii_trio.ChannelAborted) as info:
                    await channel.reader.read_all()
                assert info.value.code == 1001


async def test_limits_answer_with_limit_exceeded() -> None:
    async with iii_trio.open_engine(
        port=0, max_pending_invocations=3, max_channels_per_worker=2
    ) as engine:
        async with (
            iii_trio.connect_worker(engine.url, name="server") as server,
            iii_trio.connect_worker(engine.url, name="client") as client,
        ):
            release = trio.Event()

            async def wait(payload):
                await release.wait()
                return payload

            server.register_function("lim::wait", wait)
            await engine.wait_function("lim::wait")
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    results: list[int] = []

                    async def call(n: int) -> None:
                        result = await client.trigger("lim::wait", n)
                        assert isinstance(result, int)
                        results.append(result)

                    for n in range(3):
                        nursery.start_soon(call, n)
                    await engine.wait_until(lambda e: e.statistics().invocations == 3)
                    with pytest.raises(iii_trio.InvocationError) as info:
                        await client.trigger("lim::wait", 99)
                    assert info.value.code == "limit_exceeded"
                    release.set()
                assert sorted(results) == [0, 1, 2]  # the calls within the limit were unharmed
                await client.create_channel()
                await client.create_channel()
                with pytest.raises(iii_trio.InvocationError) as channel_info:
                    await client.create_channel()
                assert channel_info.value.code == "limit_exceeded"


async def test_connect_timeout_names_the_engine_that_did_not_answer() -> None:
    # A TCP listener that accepts and never answers the upgrade (a hung or overloaded engine).
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    held: list[trio.SocketStream] = []
    async with trio.open_nursery() as nursery:

        async def accept_and_hold() -> None:
            while True:
                held.append(await listeners[0].accept())

        nursery.start_soon(accept_and_hold)
        with trio.fail_after(10), pytest.raises(iii_trio.EngineUnreachable) as info:
            async with iii_trio.connect_worker(f"ws://127.0.0.1:{port}", connect_timeout=0.3):
                pass
        assert f"no WebSocket upgrade from 127.0.0.1:{port} within 0.3s" in str(info.value)
        assert isinstance(info.value.__cause__, trio.TooSlowError)
        nursery.cancel_scope.cancel()
    for stream in held:
        await stream.aclose()
    await listeners[0].aclose()
