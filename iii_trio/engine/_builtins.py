"""The engine's own functions (``engine::*``), answered inline by the engine.

Each takes ``(engine, caller, payload)`` and returns the JSON result or raises
:class:`BuiltinError`. Shapes follow iii's (see the protocol reference, section 4).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from .._codes import ENGINE_SHUTDOWN, INVALID_PAYLOAD, LIMIT_EXCEEDED
from ..protocol import JSON
from ._broker import ChannelLimitExceeded
from ._registry import DEFAULT_NAMESPACE, RESERVED_PREFIX

if TYPE_CHECKING:
    from ._connection import WorkerConnection
    from ._engine import Engine


class BuiltinError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _payload(data: JSON) -> dict[str, JSON]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BuiltinError(INVALID_PAYLOAD, "payload must be a JSON object")
    return data


def _opt(payload: dict[str, JSON], key: str, kind: type[object], kind_name: str) -> JSON:
    value = payload.get(key)
    if value is not None and (
        not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool)
    ):
        raise BuiltinError(INVALID_PAYLOAD, f"'{key}' must be {kind_name}")
    return value


def workers_register(engine: Engine, caller: WorkerConnection, data: JSON) -> JSON:
    payload = _payload(data)
    info = {k: v for k, v in payload.items() if k != "_caller_worker_id"}
    namespace = _opt(payload, "namespace", str, "a string")
    caller.info = info
    if isinstance(namespace, str) and namespace:
        for function_id in caller.move_to_namespace(namespace):
            engine.log_conflict(caller, function_id)
    return {"success": True}


def functions_list(engine: Engine, caller: WorkerConnection, data: JSON) -> JSON:
    payload = _payload(data)
    search = _opt(payload, "search", str, "a string")
    prefix = _opt(payload, "prefix", str, "a string")
    worker = _opt(payload, "worker", str, "a string")
    include_internal = bool(_opt(payload, "include_internal", bool, "a boolean"))
    workers = payload.get("workers")
    if workers is not None and not (
        isinstance(workers, list) and all(isinstance(w, str) for w in workers)
    ):
        raise BuiltinError(INVALID_PAYLOAD, "'workers' must be a list of strings")
    rows: list[JSON] = []
    if include_internal:
        for function_id in sorted(BUILTINS):
            rows.append(
                {
                    "function_id": function_id,
                    "namespace": DEFAULT_NAMESPACE,
                    "worker_name": "engine",
                }
            )
    for entry in engine.registry:
        conn = engine.workers.get(entry.worker_id)
        worker_name = conn.name if conn is not None else entry.worker_id
        metadata = entry.metadata
        if not include_internal and isinstance(metadata, dict) and metadata.get("internal") is True:
            continue
        if isinstance(search, str) and search.lower() not in entry.function_id.lower():
            continue
        if isinstance(prefix, str) and not entry.function_id.startswith(prefix):
            continue
        names = {worker_name, entry.worker_id}
        if isinstance(worker, str) and worker not in names:
            continue
        if isinstance(workers, list) and not names.intersection(workers):
            continue
        row: dict[str, JSON] = {
            "function_id": entry.function_id,
            "namespace": entry.namespace,
            "worker_name": worker_name,
            "worker_id": entry.worker_id,
        }
        if entry.description is not None:
            row["description"] = entry.description
        if entry.metadata is not None:
            row["metadata"] = entry.metadata
        rows.append(row)
    return {"functions": rows}


def workers_list(engine: Engine, caller: WorkerConnection, data: JSON) -> JSON:
    payload = _payload(data)
    search = _opt(payload, "search", str, "a string")
    runtime = _opt(payload, "runtime", str, "a string")
    rows: list[JSON] = []
    for conn in list(engine.workers.values()):
        info = conn.info
        if isinstance(search, str) and search.lower() not in conn.name.lower():
            continue
        if isinstance(runtime, str) and info.get("runtime") != runtime:
            continue
        host = conn.peer.rsplit(":", 1)[0]
        rows.append(
            {
                "id": conn.worker_id,
                "name": conn.name,
                "description": info.get("description"),
                "version": info.get("version"),
                "namespace": conn.namespace,
                "runtime": info.get("runtime"),
                "os": info.get("os"),
                "isolation": info.get("isolation"),
                "pid": info.get("pid"),
                "status": "connected",
                "function_count": len(engine.registry.owned_by(conn.worker_id)),
                "connected_at_ms": conn.connected_at_ms,
                "active_invocations": engine.invocations.active_for(conn.worker_id),
                "ip_address": host,
            }
        )
    return {"workers": rows}


def channels_create(engine: Engine, caller: WorkerConnection, data: JSON) -> JSON:
    payload = _payload(data)
    buffer_size = _opt(payload, "buffer_size", int, "an integer or null")
    assert buffer_size is None or isinstance(buffer_size, int)
    if engine.shutting_down:
        raise BuiltinError(ENGINE_SHUTDOWN, "the engine is shutting down")
    try:
        return engine.broker.create(caller.worker_id, buffer_size)
    except ChannelLimitExceeded as exc:
        raise BuiltinError(LIMIT_EXCEEDED, str(exc)) from exc


def channels_list(engine: Engine, caller: WorkerConnection, data: JSON) -> JSON:
    _payload(data)
    return {"channels": engine.broker.describe()}


def triggers_list(engine: Engine, caller: WorkerConnection, data: JSON) -> JSON:
    return engine.triggers.list_types(caller, data)


def registered_triggers_list(engine: Engine, caller: WorkerConnection, data: JSON) -> JSON:
    return engine.triggers.list_bindings(caller, data)


def register_trigger(engine: Engine, caller: WorkerConnection, data: JSON) -> JSON:
    return engine.triggers.register_durable(caller, data)


def unregister_trigger(engine: Engine, caller: WorkerConnection, data: JSON) -> JSON:
    return engine.triggers.unregister_durable(caller, data)


Builtin = Callable[["Engine", "WorkerConnection", JSON], JSON]

BUILTINS: Final[dict[str, Builtin]] = {
    "engine::workers::register": workers_register,
    "engine::functions::list": functions_list,
    "engine::workers::list": workers_list,
    "engine::channels::create": channels_create,
    "engine::channels::list": channels_list,
    "engine::triggers::list": triggers_list,
    "engine::registered-triggers::list": registered_triggers_list,
    "engine::register_trigger": register_trigger,
    "engine::unregister_trigger": unregister_trigger,
}
assert all(name.startswith(RESERVED_PREFIX) for name in BUILTINS)
