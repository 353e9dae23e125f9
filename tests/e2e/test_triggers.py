"""Trigger types and bindings end to end, over real sockets: our SDK as provider and binder,
and raw protocol clients to pin the engine's wire behaviour."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import trio

import iii_trio
from iii_trio._ws import ConnectionClosed
from iii_trio.protocol import (
    Error,
    InvocationResult,
    Ping,
    Pong,
    Reattach,
    RegisterTrigger,
    RegisterTriggerType,
    TriggerRegistrationResult,
    UnregisterTrigger,
    UnregisterTriggerType,
    WorkerRegistered,
)
from tests.helpers import new_id, wait_for

if TYPE_CHECKING:
    from collections.abc import Callable

TIMEOUT = 15


class Watch:
    """Wake waiters whenever something changed; ``wait(pred)`` re-checks."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def changed(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait(self, predicate: Callable[[], bool]) -> None:
        with trio.fail_after(TIMEOUT):
            while not predicate():
                await self._event.wait()


class Provider:
    """A trigger handler that records everything and fires each binding once.

    ``{"fail": why}`` in a config refuses the binding; ``{"crash": why}`` lets it register,
    fire, then crashes its background work.
    """

    def __init__(self, *, fire: bool = True) -> None:
        self.fire = fire
        self.watch = Watch()
        self.registered: list[iii_trio.TriggerBinding] = []
        self.unregistered: list[iii_trio.TriggerBinding] = []
        self.work_cancelled: list[str] = []
        self.fired: dict[str, Any] = {}

    async def register_trigger(self, binding: iii_trio.TriggerBinding) -> None:
        config = binding.config if isinstance(binding.config, dict) else {}
        if "fail" in config:
            raise ValueError(config["fail"])
        self.registered.append(binding)
        binding.start_soon(self._work, binding, config)
        self.watch.changed()

    async def _work(self, binding: iii_trio.TriggerBinding, config: dict[str, Any]) -> None:
        try:
            if self.fire:
                self.fired[binding.id] = await binding.fire(
                    {"trigger": binding.id, "config": binding.config}
                )
                self.watch.changed()
            if "crash" in config:
                raise RuntimeError(config["crash"])
            await trio.sleep_forever()
        except trio.Cancelled:
            self.work_cancelled.append(binding.id)
            raise

    async def unregister_trigger(self, binding: iii_trio.TriggerBinding) -> None:
        assert not binding.active  # its work was cancelled first
        self.unregistered.append(binding)
        self.watch.changed()

    def registered_ids(self) -> list[str]:
        return [b.id for b in self.registered]

    def unregistered_ids(self) -> list[str]:
        return [b.id for b in self.unregistered]


class Calls:
    """A function handler recording its payloads."""

    def __init__(self, result: Any = "ok") -> None:
        self.result = result
        self.payloads: list[Any] = []
        self.watch = Watch()

    async def __call__(self, payload: Any) -> Any:
        self.payloads.append(payload)
        self.watch.changed()
        return self.result

    async def wait_count(self, n: int) -> None:
        await self.watch.wait(lambda: len(self.payloads) >= n)


def status(engine: iii_trio.Engine, binding_id: str) -> str | None:
    return engine._router.triggers.status(binding_id)


# --- our SDK on both sides --------------------------------------------------------------------


async def test_bind_fire_list_and_unbind(iii_engine, iii_worker) -> None:
    provider = Provider()
    source = await iii_worker(name="source")
    ticks = source.register_trigger_type("tick", provider, description="ticks now and then")
    binder = await iii_worker(name="binder")
    calls = Calls(result={"handled": True})
    binder.register_function("app::on_tick", calls)
    await iii_engine.wait_function("app::on_tick")
    ref = binder.register_trigger("tick", "app::on_tick", {"every": 5}, metadata={"m": 1})
    assert ref.trigger_type == "tick"
    assert ref.function_id == "app::on_tick"
    assert ref.registered
    await calls.wait_count(1)
    assert calls.payloads[0]["trigger"] == ref.id
    assert calls.payloads[0]["config"] == {"every": 5}
    await provider.watch.wait(lambda: ref.id in provider.fired)
    assert provider.fired[ref.id] == {"handled": True}
    [binding] = provider.registered
    assert (binding.id, binding.trigger_type, binding.function_id) == (
        ref.id,
        "tick",
        "app::on_tick",
    )
    assert binding.metadata == {"m": 1}
    assert binding.namespace == "default"
    assert ticks.bindings == {ref.id: binding}
    await wait_for(iii_engine, lambda e: e._router.triggers.bindings[ref.id].acknowledged)

    with trio.fail_after(TIMEOUT):
        types = await binder.trigger("engine::triggers::list", {})
        assert types == {
            "triggers": [
                {
                    "id": "tick",
                    "namespace": "default",
                    "worker_name": "source",
                    "description": "ticks now and then",
                }
            ]
        }
        listed = await binder.trigger("engine::registered-triggers::list", {})
        assert listed == {
            "registered_triggers": [
                {
                    "id": ref.id,
                    "trigger_type": "tick",
                    "function_id": "app::on_tick",
                    "worker_name": "binder",
                    "status": "active",
                    "config": {"every": 5},
                    "config_summary": '{"every":5}',
                }
            ]
        }
        assert (
            await binder.trigger("engine::registered-triggers::list", {"trigger_type": "other"})
        ) == {"registered_triggers": []}
        assert (await binder.trigger("engine::triggers::list", {"search": "TICKS"}))["triggers"][0][
            "id"
        ] == "tick"
        assert (await binder.trigger("engine::triggers::list", {"worker": "binder"})) == {
            "triggers": []
        }

    ref.unregister()
    assert not ref.registered
    await provider.watch.wait(lambda: provider.unregistered_ids() == [ref.id])
    assert provider.work_cancelled == [ref.id]
    assert not binding.active
    assert ticks.bindings == {}
    await wait_for(iii_engine, lambda e: len(e._router.triggers) == 0)
    assert len(calls.payloads) == 1


async def test_binding_made_before_its_type_exists(iii_engine, iii_worker) -> None:
    binder = await iii_worker(name="binder")
    calls = Calls()
    binder.register_function("app::later", calls)
    ref = binder.register_trigger("later", "app::later", {"k": "v"})
    await wait_for(iii_engine, lambda e: status(e, ref.id) == "pending")
    with trio.fail_after(TIMEOUT):
        assert (await binder.trigger("engine::registered-triggers::list", {}))[
            "registered_triggers"
        ] == []
        pending = await binder.trigger(
            "engine::registered-triggers::list", {"include_pending": True}
        )
        [row] = pending["registered_triggers"]
        assert row["id"] == ref.id
        assert row["status"] == "pending"

    provider = Provider()
    source = await iii_worker(name="source")
    source.register_trigger_type("later", provider)
    await calls.wait_count(1)
    assert calls.payloads[0]["config"] == {"k": "v"}
    assert status(iii_engine, ref.id) == "active"


async def test_provider_reconnect_gets_its_bindings_again(iii_engine, iii_worker) -> None:
    provider = Provider()
    source = await iii_worker(name="source")
    source.register_trigger_type("tick", provider)
    binder = await iii_worker(name="binder")
    calls = Calls()
    binder.register_function("app::on_tick", calls)
    ref = binder.register_trigger("tick", "app::on_tick", None)
    await calls.wait_count(1)
    first_connection = source.worker_id

    # Drop the provider's connection under it: the SDK reconnects and replays its types.
    session = source._session
    assert session is not None
    await session.ws.abort()
    # The binding's work is cancelled with the connection and its handler told.
    await provider.watch.wait(lambda: provider.unregistered_ids() == [ref.id])
    assert provider.work_cancelled == [ref.id]
    await wait_for(iii_engine, lambda e: first_connection not in e._router.workers)
    # ... and the engine delivers it again once the provider is back.
    await provider.watch.wait(lambda: provider.registered_ids() == [ref.id, ref.id])
    await calls.wait_count(2)
    assert source.connections == 2
    assert source.worker_id != first_connection
    assert status(iii_engine, ref.id) == "active"
    assert iii_engine._router.triggers.bindings[ref.id].provider == source.worker_id


async def test_provider_refusal_reaches_the_binder(iii_engine, iii_worker) -> None:
    provider = Provider()
    source = await iii_worker(name="source")
    source.register_trigger_type("tick", provider)
    source.register_function("source::alive", lambda p: "alive")
    binder = await iii_worker(name="binder")
    binder.register_function("app::on_tick", Calls())
    ref = binder.register_trigger("tick", "app::on_tick", {"fail": "no such schedule"})
    with trio.fail_after(TIMEOUT):
        error = await ref.wait_failed()
    assert isinstance(error, iii_trio.TriggerError)
    assert error.code == "trigger_registration_failed"
    assert error.message == "no such schedule"
    assert error.trigger_id == ref.id
    assert error.function_id == "app::on_tick"
    assert ref.error is error
    assert provider.unregistered == []  # never registered, so never unregistered
    # The engine parks it; the provider and everyone else carry on.
    await wait_for(iii_engine, lambda e: status(e, ref.id) == "pending")
    with trio.fail_after(TIMEOUT):
        assert await binder.trigger("source::alive", {}) == "alive"


async def test_binding_work_crash_reports_trigger_failed(iii_engine, iii_worker) -> None:
    provider = Provider()
    source = await iii_worker(name="source")
    source.register_trigger_type("tick", provider)
    binder = await iii_worker(name="binder")
    calls = Calls()
    binder.register_function("app::on_tick", calls)
    ref = binder.register_trigger("tick", "app::on_tick", {"crash": "disk on fire"})
    with trio.fail_after(TIMEOUT):
        error = await ref.wait_failed()
    assert error.code == "trigger_failed"
    assert error.message == "disk on fire"
    assert error.stacktrace is not None
    assert "RuntimeError: disk on fire" in error.stacktrace
    assert calls.payloads  # it fired before crashing
    await provider.watch.wait(lambda: provider.unregistered_ids() == [ref.id])
    # The provider's connection survived: a new binding works.
    other = binder.register_trigger("tick", "app::on_tick", {"n": 2})
    await provider.watch.wait(lambda: other.id in provider.fired)


async def test_binder_disconnect_unbinds(iii_engine, iii_worker) -> None:
    provider = Provider(fire=False)
    source = await iii_worker(name="source")
    source.register_trigger_type("tick", provider)
    async with iii_trio.connect_worker(iii_engine.url, name="short-lived") as binder:
        ref = binder.register_trigger("tick", "app::whatever", {})
        await provider.watch.wait(lambda: provider.registered_ids() == [ref.id])
    await provider.watch.wait(lambda: provider.unregistered_ids() == [ref.id])
    await wait_for(iii_engine, lambda e: len(e._router.triggers) == 0)


async def test_unregister_trigger_type_parks_bindings_for_the_next_provider(
    iii_engine, iii_worker
) -> None:
    first = Provider(fire=False)
    a = await iii_worker(name="a")
    a.register_trigger_type("tick", first)
    binder = await iii_worker(name="binder")
    ref = binder.register_trigger("tick", "app::on_tick", {})
    await first.watch.wait(lambda: first.registered_ids() == [ref.id])
    a.unregister_trigger_type("tick")
    await first.watch.wait(lambda: first.unregistered_ids() == [ref.id])
    await wait_for(
        iii_engine, lambda e: status(e, ref.id) == "pending" and not e._router.triggers.types
    )
    second = Provider(fire=False)
    b = await iii_worker(name="b")
    b.register_trigger_type("tick", second)
    await second.watch.wait(lambda: second.registered_ids() == [ref.id])
    assert first.registered_ids() == [ref.id]  # not offered to a again


async def test_unbind_while_the_handler_is_still_registering(iii_engine, iii_worker) -> None:
    entered = trio.Event()
    cancelled = trio.Event()
    unregistered: list[str] = []

    class Slow:
        async def register_trigger(self, binding: iii_trio.TriggerBinding) -> None:
            entered.set()
            try:
                await trio.sleep_forever()
            finally:
                cancelled.set()

        async def unregister_trigger(self, binding: iii_trio.TriggerBinding) -> None:
            unregistered.append(binding.id)

    source = await iii_worker(name="source")
    source.register_trigger_type("slow", Slow())
    binder = await iii_worker(name="binder")
    ref = binder.register_trigger("slow", "app::f", {})
    with trio.fail_after(TIMEOUT):
        await entered.wait()
        binder.unregister_trigger(ref.id)
        await cancelled.wait()
    await wait_for(iii_engine, lambda e: len(e._router.triggers) == 0)
    assert unregistered == []


async def test_bind_then_unbind_at_once_keeps_order(iii_engine, iii_worker) -> None:
    binder = await iii_worker(name="binder")
    refs = [binder.register_trigger("nobody", f"app::f{i}", {"i": i}) for i in range(20)]
    for ref in refs[::2]:
        ref.unregister()
    keep = {ref.id for ref in refs[1::2]}
    await wait_for(iii_engine, lambda e: set(e._router.triggers.bindings) == keep)


async def test_sync_handler_methods_and_iii_input_forms(iii_engine, iii_worker) -> None:
    seen: list[tuple[str, Any]] = []
    watch = Watch()

    class Plain:
        def register_trigger(self, binding: iii_trio.TriggerBinding) -> None:
            seen.append(("register", binding.config))
            watch.changed()

        def unregister_trigger(self, binding: iii_trio.TriggerBinding) -> None:
            seen.append(("unregister", binding.config))
            watch.changed()

    source = await iii_worker(name="source")
    kind = source.register_trigger_type({"id": "plain", "description": "plain handler"}, Plain())
    binder = await iii_worker(name="binder")
    ref = binder.register_trigger({"type": "plain", "function_id": "app::f", "config": {"a": 1}})
    await wait_for(
        iii_engine,
        lambda e: (
            e._router.triggers.bindings.get(ref.id) is not None
            and e._router.triggers.bindings[ref.id].acknowledged
        ),
    )
    assert seen == [("register", {"a": 1})]
    assert list(kind.bindings) == [ref.id]
    kind.unregister()
    await watch.wait(lambda: len(seen) == 2)
    assert seen == [("register", {"a": 1}), ("unregister", {"a": 1})]
    await wait_for(iii_engine, lambda e: status(e, ref.id) == "pending")
    with pytest.raises(TypeError):
        source.register_trigger_type("broken", object())
    with pytest.raises(iii_trio.LocalProtocolError):
        binder.register_trigger("plain", "app::f", {"not json": object()})
    with pytest.raises(ValueError, match="function_id"):
        binder.register_trigger("plain", "")


async def test_durable_bindings_through_builtins(iii_engine, iii_worker) -> None:
    provider = Provider()
    source = await iii_worker(name="source")
    source.register_trigger_type("tick", provider)
    target = await iii_worker(name="target")
    calls = Calls()
    target.register_function("app::durable", calls)
    await iii_engine.wait_function("app::durable")
    with trio.fail_after(TIMEOUT):
        async with iii_trio.connect_worker(iii_engine.url, name="cli") as cli:
            made = await cli.trigger(
                "engine::register_trigger",
                {"trigger_type": "tick", "function_id": "app::durable", "config": {"d": 1}},
            )
            binding_id = made["id"]
            with pytest.raises(iii_trio.InvocationError) as info:
                await cli.trigger("engine::register_trigger", {"trigger_type": "tick"})
            assert info.value.code == "invalid_payload"
        # The binding outlives the connection that made it.
        await calls.wait_count(1)
        assert calls.payloads[0]["trigger"] == binding_id
        listed = await target.trigger(
            "engine::registered-triggers::list", {"function_id": "app::durable"}
        )
        assert [r["id"] for r in listed["registered_triggers"]] == [binding_id]
        assert listed["registered_triggers"][0]["worker_name"] == "target"
        assert await target.trigger("engine::unregister_trigger", {"id": binding_id}) == {
            "removed": True
        }
        assert await target.trigger("engine::unregister_trigger", {"id": binding_id}) == {
            "removed": False
        }
    await provider.watch.wait(lambda: provider.unregistered_ids() == [binding_id])


# --- raw protocol: the engine's wire behaviour ------------------------------------------------


async def test_raw_provider_disconnects_and_a_new_connection_gets_bindings(iii_engine, raw) -> None:
    binder = await raw()
    binding_id = new_id()
    with trio.fail_after(TIMEOUT):
        await binder.send(
            RegisterTrigger(id=binding_id, trigger_type="raw", function_id="f", config={"c": 1})
        )
        await wait_for(iii_engine, lambda e: status(e, binding_id) == "pending")
        provider = await raw()
        await provider.send(RegisterTriggerType(id="raw", description="raw type"))
        delivered = await provider.expect(RegisterTrigger)
        assert (delivered.id, delivered.trigger_type, delivered.function_id, delivered.config) == (
            binding_id,
            "raw",
            "f",
            {"c": 1},
        )
        assert delivered.namespace == "default"
        await provider.send(
            TriggerRegistrationResult(id=binding_id, trigger_type="raw", function_id="f")
        )
        await wait_for(iii_engine, lambda e: e._router.triggers.bindings[binding_id].acknowledged)
        await provider.aclose()
        await wait_for(iii_engine, lambda e: status(e, binding_id) == "pending")
        again = await raw()
        await again.send(RegisterTriggerType(id="raw", description="raw type"))
        redelivered = await again.expect(RegisterTrigger)
        assert redelivered == delivered
        # Success results are not forwarded: the binder's next message is its pong.
        await again.send(
            TriggerRegistrationResult(id=binding_id, trigger_type="raw", function_id="f")
        )
        await wait_for(iii_engine, lambda e: e._router.triggers.bindings[binding_id].acknowledged)
        await binder.send(Ping())
        assert isinstance(await binder.expect((Pong, TriggerRegistrationResult)), Pong)
        # The binder leaves: the provider is told.
        await binder.aclose()
        gone = await again.expect(UnregisterTrigger)
        assert gone == UnregisterTrigger(id=binding_id, trigger_type="raw")
        await wait_for(iii_engine, lambda e: len(e._router.triggers) == 0)


async def test_raw_error_result_is_forwarded_to_the_binder(iii_engine, raw) -> None:
    provider = await raw()
    binder = await raw()
    binding_id = new_id()
    with trio.fail_after(TIMEOUT):
        await provider.send(RegisterTriggerType(id="raw", description=""))
        await wait_for(iii_engine, lambda e: e._router.triggers.types)
        await binder.send(
            {"type": "registertrigger", "id": binding_id, "trigger_type": "raw", "function_id": "f"}
        )
        delivered = await provider.expect(RegisterTrigger)
        assert delivered.config is None  # a missing config is null
        error = {"code": "trigger_registration_failed", "message": "bad config"}
        await provider.send(
            {
                "type": "triggerregistrationresult",
                "id": binding_id,
                "trigger_type": "raw",
                "function_id": "f",
                "error": error,
            }
        )
        forwarded = await binder.expect(TriggerRegistrationResult)
        assert forwarded.id == binding_id
        assert forwarded.function_id == "f"
        assert forwarded.error is not None
        assert forwarded.error.message == "bad config"
        assert status(iii_engine, binding_id) == "pending"
        # A result from a connection the binding was never delivered to is ignored.
        intruder = await raw()
        await intruder.send(
            {
                "type": "triggerregistrationresult",
                "id": binding_id,
                "trigger_type": "raw",
                "function_id": "f",
                "error": error,
            }
        )
        await intruder.send(Ping())
        await intruder.expect(Pong)
        await binder.send(Ping())
        assert isinstance(await binder.expect((Pong, TriggerRegistrationResult)), Pong)


async def test_raw_a_trigger_type_belongs_to_its_provider(iii_engine, raw) -> None:
    """Issue 14: a second worker registering a live provider's type used to take it over, and
    with it every binding's config. Now it is refused, as a function would be; the type is
    free again once its provider leaves."""
    first = await raw()
    second = await raw()
    binder = await raw()
    binding_id = new_id()
    with trio.fail_after(TIMEOUT):
        await first.send(RegisterTriggerType(id="t", description=""))
        await binder.send(
            RegisterTrigger(id=binding_id, trigger_type="t", function_id="f", config={"secret": 1})
        )
        assert (await first.expect(RegisterTrigger)).id == binding_id
        await second.send(RegisterTriggerType(id="t", description=""))
        refusal = await second.expect(Error)
        assert refusal.error.code == "TRIGGER_TYPE_CONFLICT"
        await second.send(Ping())
        assert isinstance(await second.expect((Pong, RegisterTrigger)), Pong)  # nothing leaked
        assert iii_engine._router.triggers.bindings[binding_id].provider != second
        # Only the binder can unbind through the protocol.
        await first.send(UnregisterTrigger(id=binding_id))
        await first.send(Ping())
        await first.expect(Pong)
        assert status(iii_engine, binding_id) == "active"
        # The provider leaves: the type is free, and the second provider can take it.
        await first.aclose()
        await wait_for(iii_engine, lambda e: status(e, binding_id) == "pending")
        await second.send(RegisterTriggerType(id="t", description=""))
        assert (await second.expect(RegisterTrigger)).id == binding_id
        await binder.send(UnregisterTrigger(id=binding_id, trigger_type="t"))
        assert await second.expect(UnregisterTrigger) == UnregisterTrigger(
            id=binding_id, trigger_type="t"
        )
        # The provider that unregisters its type is not told about its own bindings.
        other = new_id()
        await binder.send(RegisterTrigger(id=other, trigger_type="t", function_id="f", config=2))
        assert (await second.expect(RegisterTrigger)).id == other
        await second.send(UnregisterTriggerType(id="t"))
        await wait_for(iii_engine, lambda e: status(e, other) == "pending")
        await second.send(Ping())
        assert isinstance(await second.expect((Pong, UnregisterTrigger)), Pong)


async def test_raw_a_binding_belongs_to_its_binder(iii_engine, raw) -> None:
    """Issue 14: another worker could re-register a binding's id to point at its own function,
    or delete it with engine::unregister_trigger. Both are refused now."""
    provider = await raw()
    binder = await raw()
    intruder = await raw()
    binding_id = new_id()
    with trio.fail_after(TIMEOUT):
        await provider.send(RegisterTriggerType(id="t", description=""))
        await binder.send(
            RegisterTrigger(id=binding_id, trigger_type="t", function_id="app::f", config=1)
        )
        assert (await provider.expect(RegisterTrigger)).function_id == "app::f"
        await intruder.send(
            RegisterTrigger(id=binding_id, trigger_type="t", function_id="evil::f", config=1)
        )
        refused = await intruder.expect(TriggerRegistrationResult)
        assert refused.error is not None
        assert refused.error.code == "trigger_registration_failed"
        assert "belongs to another worker" in refused.error.message
        call = {
            "type": "invokefunction",
            "invocation_id": new_id(),
            "function_id": "engine::unregister_trigger",
            "data": {"id": binding_id},
        }
        await intruder.send(call)
        answer = await intruder.expect(InvocationResult)
        assert answer.result == {"removed": False}
        binding = iii_engine._router.triggers.bindings[binding_id]
        assert binding.function_id == "app::f" and binding.status == "active"
        # The binder may remove its own binding through the built-in too.
        await binder.send({**call, "invocation_id": new_id()})
        assert (await binder.expect(InvocationResult)).result == {"removed": True}
        assert await provider.expect(UnregisterTrigger) == UnregisterTrigger(
            id=binding_id, trigger_type="t"
        )


async def test_raw_reattach_evicts_the_previous_connection(iii_engine, raw) -> None:
    """A provider that reconnects before its old connection is noticed dead names it with
    iii's reattach (and its token): the engine drops the old one, so the replayed type is
    free. A wrong token changes nothing."""
    old = await raw()
    welcome = await old.expect(WorkerRegistered)
    await old.send(RegisterTriggerType(id="t", description=""))
    await wait_for(iii_engine, lambda e: e._router.triggers.types)
    with trio.fail_after(TIMEOUT):
        impostor = await raw()
        await impostor.send(Reattach(previous_worker_id=welcome.worker_id, reattach_token="x"))
        await impostor.send(Ping())
        await impostor.expect(Pong)
        assert welcome.worker_id in iii_engine._router.workers
        new = await raw()
        await new.send(
            Reattach(previous_worker_id=welcome.worker_id, reattach_token=welcome.reattach_token)
        )
        await new.send(RegisterTriggerType(id="t", description=""))
        await new.send(Ping())
        assert isinstance(await new.expect((Pong, Error)), Pong)  # not refused
        assert welcome.worker_id not in iii_engine._router.workers
        with pytest.raises(ConnectionClosed):
            while True:
                await old.receive()


async def test_builtin_payload_errors(iii_engine, iii_worker) -> None:
    client = await iii_worker(name="client")
    with trio.fail_after(TIMEOUT):
        for function_id, payload in [
            ("engine::triggers::list", {"prefix": 1}),
            ("engine::registered-triggers::list", {"include_pending": "yes"}),
            ("engine::unregister_trigger", {}),
            ("engine::register_trigger", [1]),
        ]:
            with pytest.raises(iii_trio.InvocationError) as info:
                await client.trigger(function_id, payload)
            assert info.value.code == "invalid_payload", function_id
