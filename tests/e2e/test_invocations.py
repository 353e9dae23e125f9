"""Functions and invocations end to end: our SDK and raw clients against a real engine on
127.0.0.1 (the iii_engine / iii_worker fixtures come from iii_trio's pytest plugin)."""

from __future__ import annotations

import pytest
import trio

import iii_trio
from iii_trio.protocol import (
    ActionVoid,
    Error,
    InvocationResult,
    InvokeFunction,
    Ping,
    Pong,
    RegisterFunction,
    RegistrationRejected,
    WorkerRegistered,
)
from tests.helpers import new_id, wait_for


async def test_trigger_async_and_sync_handlers(iii_engine, iii_worker) -> None:
    server = await iii_worker(name="server")

    @server.function("greet")
    async def greet(payload):
        return {"msg": f"hi {payload['name']}"}

    server.register_function("add", lambda p: p["a"] + p["b"])
    await iii_engine.wait_function("greet")
    await iii_engine.wait_function("add")
    client = await iii_worker(name="client")
    with trio.fail_after(10):
        assert await client.trigger("greet", {"name": "x"}) == {"msg": "hi x"}
        assert await client.trigger("add", {"a": 2, "b": 3}) == 5
        # iii's request form
        assert await client.trigger({"function_id": "add", "payload": {"a": 1, "b": 1}}) == 2


async def test_handler_error_becomes_invocation_failed(iii_engine, iii_worker) -> None:
    server = await iii_worker(name="server")

    async def boom(payload):
        raise ValueError(f"bad {payload['x']}")

    server.register_function("boom", boom)
    await iii_engine.wait_function("boom")
    client = await iii_worker(name="client")
    with trio.fail_after(10), pytest.raises(iii_trio.InvocationFailed) as info:
        await client.trigger("boom", {"x": 7})
    assert info.value.code == "invocation_failed"
    assert info.value.message == "bad 7"
    assert info.value.stacktrace is not None and "ValueError: bad 7" in info.value.stacktrace
    # The server survives and serves again.
    with trio.fail_after(10), pytest.raises(iii_trio.InvocationFailed):
        await client.trigger("boom", {"x": 8})


async def test_unknown_function_fails_at_once(iii_worker) -> None:
    client = await iii_worker()
    with trio.fail_after(5), pytest.raises(iii_trio.FunctionNotFound) as info:
        await client.trigger("nope::missing", {})
    assert info.value.code == "function_not_found"


async def test_void_trigger_returns_at_once_and_runs(iii_engine, iii_worker) -> None:
    server = await iii_worker(name="server")
    ran = trio.Event()
    release = trio.Event()
    seen = []

    async def slow(payload):
        seen.append(payload["n"])
        ran.set()
        await release.wait()
        return "ignored"

    server.register_function("slow", slow)
    await iii_engine.wait_function("slow")
    client = await iii_worker(name="client")
    with trio.fail_after(10):
        assert await client.trigger("slow", {"n": 1}, action="void") is None
        await ran.wait()
        release.set()
        assert (
            await client.trigger(
                {"function_id": "slow", "payload": {"n": 2}, "action": {"type": "void"}}
            )
            is None
        )
    assert seen[0] == 1
    # void invocations still leave the engine's table once answered
    await wait_for(iii_engine, lambda e: e.statistics().invocations == 0)


async def test_caller_worker_id_is_injected(iii_engine, iii_worker) -> None:
    server = await iii_worker(name="server")
    server.register_function("who", lambda p: p.get("_caller_worker_id"))
    server.register_function("echo", lambda p: p)
    await iii_engine.wait_function("echo")
    client = await iii_worker(name="client")
    with trio.fail_after(10):
        caller_id = await client.trigger("who", {})
        assert caller_id == client.worker_id
        assert await client.trigger("echo", [1, 2]) == [1, 2]  # non-objects pass untouched
        assert await client.trigger("echo", None) is None


async def test_duplicate_registration_is_rejected_first_keeps_serving(
    iii_engine, iii_worker
) -> None:
    first = await iii_worker(name="first")
    first.register_function("dup", lambda p: "first")
    await iii_engine.wait_function("dup")
    second = await iii_worker(name="second")
    second.register_function("dup", lambda p: "second")
    with trio.fail_after(10):
        rejection = await second.wait_rejected("dup")
        assert rejection.code == "FUNCTION_NAMESPACE_CONFLICT"
        client = await iii_worker(name="client")
        assert await client.trigger("dup", {}) == "first"


async def test_reserved_ids_cannot_be_registered(iii_engine, raw) -> None:
    conn = await raw()
    with trio.fail_after(10):
        await conn.send(RegisterFunction(id="engine::functions::list"))
        rejected = await conn.expect(RegistrationRejected)
        assert rejected.function_id == "engine::functions::list"
        assert rejected.code == "FUNCTION_NAMESPACE_CONFLICT"
    await conn.aclose()


async def test_unregister_function(iii_engine, iii_worker) -> None:
    server = await iii_worker(name="server")
    ref = server.register_function("temp", lambda p: 1)
    await iii_engine.wait_function("temp")
    ref.unregister()
    await wait_for(iii_engine, lambda e: e._router.functions.lookup("default", "temp") is None)
    client = await iii_worker()
    with trio.fail_after(5), pytest.raises(iii_trio.FunctionNotFound):
        await client.trigger("temp", {})


async def test_engine_deadline_answers_the_caller(raw) -> None:
    # The engine enforces deadlines (iii has none): a caller that sets no timeout of its own
    # still gets an answer, with a clear code.
    async with iii_trio.open_engine(port=0, invocation_timeout=0.3) as engine:
        executor = await raw(url=engine.url)
        await executor.send(RegisterFunction(id="never"))
        await engine.wait_function("never")
        caller = await raw(url=engine.url)
        call_id = new_id()
        with trio.fail_after(10):
            await caller.send(InvokeFunction(invocation_id=call_id, function_id="never", data={}))
            got = await executor.expect(InvokeFunction)
            assert got.timeout_ms == 300
            result = await caller.expect(InvocationResult)
        assert result.invocation_id == call_id
        assert result.error is not None and result.error.code == "invocation_timeout"
        assert len(engine._router.invocations) == 0
        # A late answer from the executor is dropped quietly.
        await executor.send(
            InvocationResult(invocation_id=got.invocation_id, function_id="never", result=1)
        )
        await executor.send(Ping())
        assert isinstance(await executor.expect(Pong), Pong)


async def test_per_call_timeout(iii_engine, iii_worker) -> None:
    server = await iii_worker(name="server")
    cancelled = trio.Event()

    async def hang(payload):
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    server.register_function("hang", hang)
    await iii_engine.wait_function("hang")
    client = await iii_worker()
    with trio.fail_after(10):
        with pytest.raises(iii_trio.InvocationTimeout):
            await client.trigger("hang", {}, timeout=0.2)
        # the executor's handler is cancelled at the deadline too
        await cancelled.wait()


async def test_executor_disconnect_stops_invocation_at_once(iii_engine, iii_worker) -> None:
    started = trio.Event()

    async def hang(payload):
        started.set()
        await trio.sleep_forever()

    client = await iii_worker(name="client")
    async with trio.open_nursery() as nursery:
        server_scope = trio.CancelScope()

        async def run_server() -> None:
            with server_scope:
                async with iii_trio.connect_worker(iii_engine.url, name="server") as server:
                    server.register_function("hang", hang)
                    await trio.sleep_forever()

        nursery.start_soon(run_server)
        await iii_engine.wait_function("hang")
        with trio.fail_after(10):
            async with trio.open_nursery() as calls:
                outcome = []

                async def call() -> None:
                    try:
                        await client.trigger("hang", {}, timeout=60)
                    except iii_trio.InvocationStopped as exc:
                        outcome.append(exc)

                calls.start_soon(call)
                await started.wait()
                server_scope.cancel()
        assert outcome and outcome[0].code == "invocation_stopped"
    await wait_for(iii_engine, lambda e: e.statistics().invocations == 0)


async def test_caller_disconnect_clears_its_invocations(iii_engine, iii_worker, raw) -> None:
    server = await iii_worker(name="server")
    started = trio.Event()

    async def hang(payload):
        started.set()
        await trio.sleep_forever()

    server.register_function("hang", hang)
    await iii_engine.wait_function("hang")
    caller = await raw()
    with trio.fail_after(10):
        await caller.send(InvokeFunction(invocation_id=new_id(), function_id="hang", data={}))
        await started.wait()
        assert len(iii_engine._router.invocations) == 1
        await caller.aclose()
        await wait_for(iii_engine, lambda e: e.statistics().invocations == 0)


async def test_result_from_a_connection_not_asked_is_ignored(iii_engine, raw) -> None:
    executor = await raw()
    intruder = await raw()
    caller = await raw()
    await executor.send(RegisterFunction(id="f"))
    await iii_engine.wait_function("f")
    call_id = new_id()
    with trio.fail_after(10):
        await caller.send(InvokeFunction(invocation_id=call_id, function_id="f", data={"v": 1}))
        got = await executor.expect(InvokeFunction)
        assert got.data == {"v": 1, "_caller_worker_id": got.data["_caller_worker_id"]}
        await intruder.send(
            InvocationResult(invocation_id=got.invocation_id, function_id="f", result="forged")
        )
        await intruder.send(
            InvocationResult(invocation_id=new_id(), function_id="f", result="stray")
        )
        await executor.send(
            InvocationResult(invocation_id=got.invocation_id, function_id="f", result="real")
        )
        result = await caller.expect(InvocationResult)
    assert result.result == "real"


async def test_same_invocation_id_from_two_callers_does_not_collide(iii_engine, raw) -> None:
    executor = await raw()
    await executor.send(RegisterFunction(id="f"))
    await iii_engine.wait_function("f")
    a = await raw()
    b = await raw()
    shared = new_id()
    with trio.fail_after(10):
        await a.send(InvokeFunction(invocation_id=shared, function_id="f", data="a"))
        first = await executor.expect(InvokeFunction)
        await b.send(InvokeFunction(invocation_id=shared, function_id="f", data="b"))
        second = await executor.expect(InvokeFunction)
        assert first.invocation_id != second.invocation_id
        await executor.send(
            InvocationResult(invocation_id=second.invocation_id, function_id="f", result="to b")
        )
        await executor.send(
            InvocationResult(invocation_id=first.invocation_id, function_id="f", result="to a")
        )
        assert (await a.expect(InvocationResult)).result == "to a"
        assert (await b.expect(InvocationResult)).result == "to b"


async def test_first_message_is_workerregistered_and_ping(iii_engine, raw) -> None:
    conn = await raw()
    with trio.fail_after(10):
        first = await conn.receive()
        assert isinstance(first, WorkerRegistered)
        assert first.worker_id in iii_engine._router.workers and first.reattach_token
        await conn.send({"type": "reattach", "previous_worker_id": new_id(), "reattach_token": "x"})
        await conn.send(Ping())
        assert isinstance(await conn.expect(Pong), Pong)


async def test_builtins(iii_engine, iii_worker) -> None:
    server = await iii_worker(name="lister")
    server.register_function("a::one", lambda p: 1, description="first", metadata={"k": 1})
    server.register_function("a::hidden", lambda p: 1, metadata={"internal": True})
    server.register_function("b::two", lambda p: 2)
    await iii_engine.wait_function("b::two")
    await iii_engine.wait_function("a::hidden")
    client = await iii_worker(name="client")
    with trio.fail_after(10):
        listed = await client.trigger("engine::functions::list", {})
        ids = {f["function_id"] for f in listed["functions"]}
        assert ids == {"a::one", "b::two"}
        one = next(f for f in listed["functions"] if f["function_id"] == "a::one")
        assert one["worker_name"] == "lister" and one["description"] == "first"
        assert one["namespace"] == "default" and one["metadata"] == {"k": 1}
        prefixed = await client.trigger("engine::functions::list", {"prefix": "b::"})
        assert [f["function_id"] for f in prefixed["functions"]] == ["b::two"]
        everything = await client.trigger("engine::functions::list", {"include_internal": True})
        all_ids = {f["function_id"] for f in everything["functions"]}
        assert {"a::hidden", "engine::channels::create", "engine::workers::list"} <= all_ids
        workers = (await client.trigger("engine::workers::list", {}))["workers"]
        by_name = {w["name"]: w for w in workers}
        assert by_name["lister"]["function_count"] == 3
        assert by_name["lister"]["runtime"] == "python-trio"
        assert by_name["client"]["status"] == "connected"
        with pytest.raises(iii_trio.InvocationError) as info:
            await client.trigger("engine::functions::list", {"prefix": 5})
        assert info.value.code == "invalid_payload"
        assert await client.trigger("engine::workers::register", {"name": "renamed"}) == {
            "success": True
        }


async def test_bad_input_gets_errors_and_spares_others(iii_engine, iii_worker, raw) -> None:
    server = await iii_worker(name="server")
    server.register_function("ok", lambda p: "ok")
    await iii_engine.wait_function("ok")
    bad = await raw()
    with trio.fail_after(10):
        await bad.expect(WorkerRegistered)
        for garbage in [
            "not json",
            "[1,2]",
            '{"type": 5}',
            '{"type":"nosuchtype"}',
            '{"type":"registerfunction","id":7}',
            b"\x00\xffbinary",
            "NaN",
        ]:
            await bad.send(garbage)
            reply = await bad.receive()
            assert isinstance(reply, Error), garbage
            assert reply.error.code in ("invalid_message", "unknown_type")
        # A broken invokefunction that still names an id gets an error *result*.
        call_id = new_id()
        await bad.send(
            {
                "type": "invokefunction",
                "invocation_id": call_id,
                "function_id": "ok",
                "data": {},
                "action": {"type": "bogus"},
            }
        )
        result = await bad.expect(InvocationResult)
        assert result.invocation_id == call_id and result.error.code == "invalid_message"
        # The same connection still works, and so does everyone else.
        await bad.send(InvokeFunction(invocation_id=new_id(), function_id="ok", data={}))
        assert (await bad.expect(InvocationResult)).result == "ok"
        client = await iii_worker()
        assert await client.trigger("ok", {}) == "ok"


async def test_oversize_message_closes_only_that_connection(raw) -> None:
    async with iii_trio.open_engine(port=0, max_message_size=1024 * 1024) as engine:
        async with iii_trio.connect_worker(engine.url, name="server") as server:
            server.register_function("ok", lambda p: "ok")
            await engine.wait_function("ok")
            big = await raw(url=engine.url)
            with trio.fail_after(10):
                await big.send(
                    InvokeFunction(
                        invocation_id=new_id(), function_id="ok", data="x" * (2 * 1024 * 1024)
                    )
                )
                with pytest.raises(iii_trio._ws.ConnectionClosed) as info:
                    while True:
                        await big.receive()
                assert info.value.code == 1009
                async with iii_trio.connect_worker(engine.url) as client:
                    assert await client.trigger("ok", {}) == "ok"


async def test_enqueue_action_is_refused_clearly(iii_engine, raw) -> None:
    conn = await raw()
    call_id = new_id()
    with trio.fail_after(10):
        await conn.send(
            {
                "type": "invokefunction",
                "invocation_id": call_id,
                "function_id": "x",
                "data": None,
                "action": {"type": "enqueue", "queue": "q"},
            }
        )
        result = await conn.expect(InvocationResult)
    assert result.error.code == "enqueue_error"


async def test_missing_data_is_null(iii_engine, iii_worker, raw) -> None:
    server = await iii_worker(name="server")
    server.register_function("echo", lambda p: {"got": p})
    await iii_engine.wait_function("echo")
    conn = await raw()
    call_id = new_id()
    with trio.fail_after(10):
        await conn.send({"type": "invokefunction", "invocation_id": call_id, "function_id": "echo"})
        result = await conn.expect(InvocationResult)
    assert result.result == {"got": None}


async def test_unknown_peripheral_and_otel_are_tolerated(iii_engine, raw) -> None:
    conn = await raw()
    otel = await raw(path="/otel")
    with trio.fail_after(10):
        await otel.send(b"OTLP" + b"\x00" * 10)
        await conn.send(b"MTRC{}")
        await conn.send({"type": "registerservice", "id": "svc"})
        await conn.send({"type": "observe", "whatever": 1})
        await conn.send(Ping())
        assert isinstance(await conn.expect(Pong), Pong)
    await otel.aclose()


async def test_void_without_reply_for_raw_callers(iii_engine, iii_worker, raw) -> None:
    server = await iii_worker(name="server")
    done = trio.Event()

    async def mark(payload):
        done.set()

    server.register_function("mark", mark)
    await iii_engine.wait_function("mark")
    conn = await raw()
    with trio.fail_after(10):
        # an id *and* void: the engine still sends no reply
        await conn.send(
            InvokeFunction(invocation_id=new_id(), function_id="mark", data={}, action=ActionVoid())
        )
        await done.wait()
        await conn.send(Ping())
        reply = await conn.receive()
        while isinstance(reply, WorkerRegistered):
            reply = await conn.receive()
        assert isinstance(reply, Pong)
