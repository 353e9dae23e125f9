"""The router, h11-style: messages in, messages out, a fake clock, no trio.run.

Also the tables it owns (FunctionRegistry, InvocationTable, TriggerTable) where a rule is
easiest to see directly.
"""

from __future__ import annotations

from typing import Any

import pytest

from iii_trio._errors import RemoteProtocolError
from iii_trio.engine._builtins import ChannelLimitExceeded
from iii_trio.engine._config import EngineConfig
from iii_trio.engine._invocations import Invocation, InvocationTable
from iii_trio.engine._registry import FunctionEntry, FunctionRegistry, RegistryLimitExceeded
from iii_trio.engine._router import Outgoing, Router
from iii_trio.engine._triggers import Binding, TriggerTable, TriggerTypeEntry
from iii_trio.protocol import (
    JSON,
    ActionVoid,
    Error,
    InvocationResult,
    InvokeFunction,
    Ping,
    Pong,
    RegisterFunction,
    RegisterTrigger,
    RegisterTriggerType,
    RegistrationRejected,
    UnregisterTrigger,
    WorkerRegistered,
    decode,
    new_uuid,
)


class FakeChannel:
    def __init__(self, last_progress: float) -> None:
        self.last_progress = last_progress


class FakeChannels:
    def __init__(self) -> None:
        self.created: list[str] = []
        self.live: dict[str, FakeChannel] = {}

    def progress_of(self, channel_id: str) -> FakeChannel | None:
        return self.live.get(channel_id)

    def create(self, owner: str, buffer_size: int | None) -> dict[str, JSON]:
        if len(self.created) >= 2:
            raise ChannelLimitExceeded("too many")
        self.created.append(owner)
        return {"writer": {"n": len(self.created)}, "reader": {}}

    def describe(self) -> list[JSON]:
        return []


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _router(**settings: Any) -> tuple[Router, Clock, list[float]]:
    clock = Clock()
    deadlines: list[float] = []
    router = Router(
        EngineConfig(**settings),
        channels=FakeChannels(),
        clock=clock,
        on_deadline=deadlines.append,
    )
    return router, clock, deadlines


def _connect(router: Router, peer: str = "127.0.0.1:1") -> str:
    record, out = router.connect(peer)
    assert out == [
        (
            record.worker_id,
            WorkerRegistered(worker_id=record.worker_id, reattach_token=record.reattach_token),
        )
    ]
    return record.worker_id


def _only(out: list[Outgoing]) -> tuple[str, Any]:
    assert len(out) == 1, out
    return out[0]


def test_a_call_goes_to_the_executor_and_its_answer_back() -> None:
    router, _, deadlines = _router(invocation_timeout=30)
    server, client = _connect(router), _connect(router)
    assert router.receive(server, RegisterFunction(id="greet")) == []
    call_id = new_uuid()
    target, forward = _only(
        router.receive(
            client, InvokeFunction(invocation_id=call_id, function_id="greet", data={"n": 1})
        )
    )
    assert target == server
    assert forward.data == {"n": 1, "_caller_worker_id": client}
    assert forward.timeout_ms == 30_000
    assert deadlines == [130.0]
    assert router.invocations.pending_calls(client) == 1
    answer = InvocationResult(invocation_id=forward.invocation_id, function_id="greet", result=7)
    target, result = _only(router.receive(server, answer))
    assert target == client and result.invocation_id == call_id and result.result == 7
    assert len(router.invocations) == 0


def test_non_object_payloads_are_forwarded_untouched() -> None:
    router, _, _ = _router()
    server, client = _connect(router), _connect(router)
    router.receive(server, RegisterFunction(id="f"))
    _, forward = _only(
        router.receive(client, InvokeFunction(invocation_id=new_uuid(), function_id="f", data=[1]))
    )
    assert forward.data == [1]


def test_only_the_executor_can_answer() -> None:
    router, _, _ = _router()
    server, client, intruder = _connect(router), _connect(router), _connect(router)
    router.receive(server, RegisterFunction(id="f"))
    _, forward = _only(
        router.receive(client, InvokeFunction(invocation_id=new_uuid(), function_id="f"))
    )
    fake = InvocationResult(invocation_id=forward.invocation_id, function_id="f", result="x")
    assert router.receive(intruder, fake) == []
    assert len(router.invocations) == 1


def test_errors_are_answered_and_void_calls_get_nothing() -> None:
    router, _, _ = _router()
    client = _connect(router)
    _, missing = _only(
        router.receive(client, InvokeFunction(invocation_id=new_uuid(), function_id="nope"))
    )
    assert missing.error.code == "function_not_found"
    assert router.receive(client, InvokeFunction(function_id="nope", action=ActionVoid())) == []
    _, pong = _only(router.receive(client, Ping()))
    assert pong == Pong()
    _, error = _only(router.receive(client, WorkerRegistered(worker_id="x")))
    assert isinstance(error, Error) and error.error.code == "invalid_message"


def test_deadlines_expire_on_the_clock() -> None:
    router, clock, _ = _router(invocation_timeout=5)
    server, client = _connect(router), _connect(router)
    router.receive(server, RegisterFunction(id="slow"))
    call_id = new_uuid()
    router.receive(
        client, InvokeFunction(invocation_id=call_id, function_id="slow", timeout_ms=2000)
    )
    assert router.next_deadline() == 102.0
    clock.now = 101.9
    assert router.expire() == []
    clock.now = 102.0
    target, answer = _only(router.expire())
    assert target == client and answer.invocation_id == call_id
    assert answer.error.code == "invocation_timeout"
    assert router.next_deadline() is None


def test_a_call_with_channels_lives_as_long_as_they_move() -> None:
    router, clock, _ = _router()
    channels = router.channels
    assert isinstance(channels, FakeChannels)
    channels.live["c1"] = stream = FakeChannel(clock.now)
    server, client = _connect(router), _connect(router)
    router.receive(server, RegisterFunction(id="store"))
    ref: dict[str, JSON] = {"channel_id": "c1", "access_key": "k", "direction": "read"}
    call = InvokeFunction(
        invocation_id=new_uuid(), function_id="store", data={"in": ref}, timeout_ms=3000
    )
    router.receive(client, call)
    for _ in range(5):  # 8 seconds of steady progress, one byte every 1.6 s
        clock.now += 1.6
        stream.last_progress = clock.now
        assert router.expire() == []
    clock.now += 3  # then it stalls
    _, answer = _only(router.expire())
    assert answer.error.code == "invocation_timeout"
    assert "stalled" in answer.error.message


def test_refused_invocation_fails_fast_with_worker_overloaded() -> None:
    router, _, _ = _router()
    server, client = _connect(router), _connect(router)
    router.receive(server, RegisterFunction(id="f"))
    call_id = new_uuid()
    _, forward = _only(
        router.receive(client, InvokeFunction(invocation_id=call_id, function_id="f"))
    )
    target, answer = _only(router.refused(server, forward))
    assert target == client and answer.invocation_id == call_id
    assert answer.error.code == "worker_overloaded"
    assert len(router.invocations) == 0


def test_a_departing_executor_fails_its_calls_and_loses_its_functions() -> None:
    router, _, _ = _router()
    server, client = _connect(router), _connect(router)
    router.receive(server, RegisterFunction(id="f"))
    call_id = new_uuid()
    router.receive(client, InvokeFunction(invocation_id=call_id, function_id="f"))
    target, answer = _only(router.disconnect(server))
    assert target == client and answer.error.code == "invocation_stopped"
    assert router.functions.lookup("default", "f") is None
    assert router.receive(server, RegisterFunction(id="f")) == []  # gone: ignored
    assert router.disconnect(server) == []


def test_first_registration_wins_and_limits_apply() -> None:
    router, _, _ = _router(max_functions_per_worker=2)
    first, second = _connect(router), _connect(router)
    router.receive(first, RegisterFunction(id="f"))
    _, rejection = _only(router.receive(second, RegisterFunction(id="f")))
    assert isinstance(rejection, RegistrationRejected)
    assert rejection.code == "FUNCTION_NAMESPACE_CONFLICT" and rejection.owner_worker_id == first
    router.receive(first, RegisterFunction(id="g"))
    _, limit = _only(router.receive(first, RegisterFunction(id="h")))
    assert limit.code == "limit_exceeded"
    assert router.receive(first, RegisterFunction(id="g")) == []  # a refresh is not a new one
    _, reserved = _only(router.receive(second, RegisterFunction(id="engine::x")))
    assert reserved.owner_worker_id == "engine"


def test_pending_calls_are_limited_per_connection() -> None:
    router, _, _ = _router(max_pending_invocations=2)
    server, client = _connect(router), _connect(router)
    router.receive(server, RegisterFunction(id="f"))
    for _ in range(2):
        router.receive(client, InvokeFunction(invocation_id=new_uuid(), function_id="f"))
    _, answer = _only(
        router.receive(client, InvokeFunction(invocation_id=new_uuid(), function_id="f"))
    )
    assert answer.error.code == "limit_exceeded"


def test_builtins_answer_inline() -> None:
    router, _, _ = _router()
    client = _connect(router)
    router.receive(client, RegisterFunction(id="a::f", description="d"))
    call = InvokeFunction(invocation_id=new_uuid(), function_id="engine::functions::list", data={})
    _, answer = _only(router.receive(client, call))
    assert answer.result == {
        "functions": [
            {
                "function_id": "a::f",
                "namespace": "default",
                "worker_name": client,
                "worker_id": client,
                "description": "d",
            }
        ]
    }
    create = InvokeFunction(
        invocation_id=new_uuid(), function_id="engine::channels::create", data={"buffer_size": "x"}
    )
    _, bad = _only(router.receive(client, create))
    assert bad.error.code == "invalid_payload"
    for _ in range(2):
        create = InvokeFunction(invocation_id=new_uuid(), function_id="engine::channels::create")
        _only(router.receive(client, create))
    _, limited = _only(router.receive(client, create))
    assert limited.error.code == "limit_exceeded"


def test_workers_register_moves_functions_to_the_namespace() -> None:
    router, _, _ = _router()
    worker = _connect(router)
    router.receive(worker, RegisterFunction(id="f"))
    call = InvokeFunction(
        function_id="engine::workers::register",
        data={"name": "w", "namespace": "ns"},
        action=ActionVoid(),
    )
    assert router.receive(worker, call) == []
    assert router.functions.lookup("ns", "f") is not None
    assert router.workers[worker].name == "w"
    listing = router.receive(
        worker, InvokeFunction(invocation_id=new_uuid(), function_id="engine::workers::list")
    )
    rows = _only(listing)[1].result["workers"]
    assert rows[0]["function_count"] == 1 and rows[0]["namespace"] == "ns"


def test_shutdown_refuses_new_calls_and_stops_the_rest() -> None:
    router, _, _ = _router()
    server, client = _connect(router), _connect(router)
    router.receive(server, RegisterFunction(id="f"))
    call_id = new_uuid()
    router.receive(client, InvokeFunction(invocation_id=call_id, function_id="f"))
    router.start_shutdown()
    _, refused = _only(
        router.receive(client, InvokeFunction(invocation_id=new_uuid(), function_id="f"))
    )
    assert refused.error.code == "engine_shutdown"
    _, stopped = _only(router.stop_invocations("bye"))
    assert stopped.invocation_id == call_id and stopped.error.code == "invocation_stopped"


def test_bad_messages_are_answered_by_what_they_still_name() -> None:
    router, _, _ = _router()
    worker = _connect(router)
    call_id = new_uuid()
    raw = f'{{"type":"invokefunction","invocation_id":"{call_id}","function_id":"f","timeout_ms":"x"}}'
    with pytest.raises(RemoteProtocolError) as info:
        decode(raw)
    _, answer = _only(router.bad_message(worker, raw, info.value))
    assert isinstance(answer, InvocationResult) and answer.invocation_id == call_id
    _, error = _only(router.bad_message(worker, "nope", RemoteProtocolError("not JSON")))
    assert isinstance(error, Error)
    assert router.bad_message(worker, '{"type":"observe"}', RemoteProtocolError("x")) == []
    assert router.workers[worker].bad_messages == 2


def test_trigger_messages_go_through_the_table() -> None:
    router, _, _ = _router()
    provider, binder = _connect(router), _connect(router)
    assert router.receive(provider, RegisterTriggerType(id="tick")) == []
    bind = RegisterTrigger(id=new_uuid(), trigger_type="tick", function_id="f", config={"k": 1})
    target, delivered = _only(router.receive(binder, bind))
    assert target == provider and delivered.config == {"k": 1}
    target, withdrawn = _only(router.disconnect(binder))
    assert target == provider and withdrawn == UnregisterTrigger(id=bind.id, trigger_type="tick")


# --- the tables -------------------------------------------------------------------------


def test_registry_departures_touch_only_their_own_functions() -> None:
    registry = FunctionRegistry(max_per_worker=3)
    for worker in ("a", "b"):
        for n in range(3):
            assert (
                registry.register(
                    FunctionEntry(namespace="d", function_id=f"{worker}{n}", worker_id=worker)
                )
                is None
            )
    with pytest.raises(RegistryLimitExceeded):
        registry.register(FunctionEntry(namespace="d", function_id="a3", worker_id="a"))
    assert registry.count_for("a") == 3
    gone = registry.remove_worker("a")
    assert sorted(e.function_id for e in gone) == ["a0", "a1", "a2"]
    assert len(registry) == 3 and registry.count_for("a") == 0
    assert not registry.unregister("d", "b0", "a")  # not its own
    assert registry.unregister("d", "b0", "b")
    assert registry.count_for("b") == 2


def test_invocation_table_ids_never_collide_and_deadlines_are_lazy() -> None:
    table = InvocationTable()
    first = Invocation(
        target_id=table.new_target_id("x"),
        caller_id="x",
        function_id="f",
        caller="c1",
        executor="e",
        deadline=5,
        started=0,
    )
    table.add(first)
    second_id = table.new_target_id("x")  # another caller picked the same id
    assert second_id != "x"
    table.add(
        Invocation(
            target_id=second_id,
            caller_id="x",
            function_id="f",
            caller="c2",
            executor="e",
            deadline=3,
            started=0,
        )
    )
    assert table.next_deadline() == 3
    assert table.complete(second_id, "e") is not None
    assert table.next_deadline() == 5  # the finished one's deadline is skipped
    assert table.complete("x", "not-the-executor") is None
    assert table.active_for("e") == 1 and table.pending_calls("c1") == 1
    assert [inv.target_id for inv in table.remove_worker("e")] == ["x"]
    assert len(table) == 0 and table.next_deadline() is None


def test_trigger_table_departures_and_new_providers_touch_what_they_concern() -> None:
    table = TriggerTable()
    for n in range(3):
        table.bind(Binding(id=f"b{n}", trigger_type="other", function_id="f", owner="x"))
    out = table.register_type(TriggerTypeEntry(id="tick", namespace="default", worker_id="p"))
    assert out == []  # nothing binds "tick" yet: no other binding is looked at
    out = table.bind(Binding(id="t", trigger_type="tick", function_id="f", owner="binder"))
    assert [target for target, _ in out] == ["p"]
    assert table.status("t") == "active"
    # The provider leaves: its binding is parked (it is not told; it is gone).
    assert table.remove_worker("p") == []
    assert table.status("t") == "pending"
    # A new provider gets it.
    out = table.register_type(TriggerTypeEntry(id="tick", namespace="default", worker_id="q"))
    assert [(target, type(msg).__name__) for target, msg in out] == [("q", "RegisterTrigger")]
    # The binder leaves: the provider is told, its bindings go.
    assert [target for target, _ in table.remove_worker("binder")] == ["q"]
    assert table.status("t") is None and len(table) == 3


def test_connection_lifecycle_table() -> None:
    from iii_trio.engine._connection import TRANSITIONS, ConnectionState

    assert TRANSITIONS[ConnectionState.OPEN] == {ConnectionState.CLOSING, ConnectionState.CLOSED}
    assert TRANSITIONS[ConnectionState.CLOSING] == {ConnectionState.CLOSED}
    assert TRANSITIONS[ConnectionState.CLOSED] == frozenset()
