"""The engine's own functions (``engine::*``), answered inline by the router.

Each takes a :class:`BuiltinCall` and returns the JSON result or raises :class:`BuiltinError`.
Shapes follow iii's (see the protocol reference, section 4). Synchronous, no I/O: what a
built-in must send elsewhere (a durable trigger binding delivered to its provider) it appends to
``call.out``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Final, Protocol

import attrs

from .._codes import (
    ENGINE_SHUTDOWN,
    INVALID_PAYLOAD,
    LIMIT_EXCEEDED,
    TRIGGER_REGISTRATION_FAILED,
)
from ..protocol import JSON, Message, new_uuid
from ._config import EngineConfig
from ._invocations import InvocationTable, Progress
from ._registry import DEFAULT_NAMESPACE, RESERVED_PREFIX, FunctionEntry, FunctionRegistry
from ._triggers import Binding, BindingRefused, TriggerTable, config_summary, matches
from ._workers import WorkerRecord

logger = logging.getLogger("iii_trio.engine")


class ChannelLimitExceeded(Exception):
    """A worker tried to hold more live channels than the engine allows."""


class ChannelService(Protocol):
    """What the built-ins need of the channel broker."""

    def create(self, owner: str, buffer_size: int | None) -> dict[str, JSON]:
        """iii's ``{"writer": ref, "reader": ref}``. Raises: ChannelLimitExceeded."""
        ...

    def describe(self) -> list[JSON]: ...

    def progress_of(self, channel_id: str) -> Progress | None:
        """The live channel ``channel_id`` (its ``last_progress``), if there is one."""
        ...


class EngineState(Protocol):
    """What the built-ins read and change (the router provides it)."""

    @property
    def workers(self) -> Mapping[str, WorkerRecord]: ...

    @property
    def functions(self) -> FunctionRegistry: ...

    @property
    def invocations(self) -> InvocationTable: ...

    @property
    def triggers(self) -> TriggerTable: ...

    @property
    def channels(self) -> ChannelService: ...

    @property
    def shutting_down(self) -> bool: ...

    @property
    def config(self) -> EngineConfig: ...

    def move_to_namespace(self, record: WorkerRecord, namespace: str) -> None: ...


@attrs.frozen
class BuiltinCall:
    """One call of a built-in: the engine, who called, the payload, and where to put messages
    for other workers."""

    engine: EngineState
    caller: WorkerRecord
    data: JSON
    out: list[tuple[str, Message]]


class BuiltinError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- payload checks ------------------------------------------------------------------------


def _payload(data: JSON) -> dict[str, JSON]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BuiltinError(INVALID_PAYLOAD, "payload must be a JSON object")
    return data


def _str(payload: dict[str, JSON], key: str) -> str | None:
    value = payload.get(key)
    if value is not None and not isinstance(value, str):
        raise BuiltinError(INVALID_PAYLOAD, f"'{key}' must be a string")
    return value


def _bool(payload: dict[str, JSON], key: str) -> bool:
    value = payload.get(key)
    if value is not None and not isinstance(value, bool):
        raise BuiltinError(INVALID_PAYLOAD, f"'{key}' must be a boolean")
    return bool(value)


def _int(payload: dict[str, JSON], key: str) -> int | None:
    value = payload.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise BuiltinError(INVALID_PAYLOAD, f"'{key}' must be an integer or null")
    return value


def _worker_name(engine: EngineState, worker_id: str) -> str:
    record = engine.workers.get(worker_id)
    return record.name if record is not None else worker_id


# --- workers and functions -----------------------------------------------------------------


def workers_register(call: BuiltinCall) -> JSON:
    payload = _payload(call.data)
    namespace = _str(payload, "namespace")
    call.caller.info = {k: v for k, v in payload.items() if k != "_caller_worker_id"}
    if namespace:
        call.engine.move_to_namespace(call.caller, namespace)
    return {"success": True}


#: Bytes a listing row takes besides its function's metadata, description and formats.
_ROW_OVERHEAD: Final = 256


def functions_list(call: BuiltinCall) -> JSON:
    """``engine::functions::list``: ``{"functions": [rows]}`` in function id order, filtered
    by ``search``, ``prefix``, ``worker``, ``workers``, ``include_internal``. The answer is cut
    at ``max_list_answer`` bytes of rows (between two function ids, never between the namespaces
    of one): then ``"next"`` names the last function listed, and ``{"after": next}`` lists the
    rest."""
    engine = call.engine
    payload = _payload(call.data)
    search = _str(payload, "search")
    prefix = _str(payload, "prefix")
    worker = _str(payload, "worker")
    after = _str(payload, "after")
    include_internal = _bool(payload, "include_internal")
    workers = payload.get("workers")
    if workers is not None and not (
        isinstance(workers, list) and all(isinstance(w, str) for w in workers)
    ):
        raise BuiltinError(INVALID_PAYLOAD, "'workers' must be a list of strings")
    rows: list[JSON] = []
    if include_internal and after is None:
        for function_id in sorted(BUILTINS):
            rows.append(
                {
                    "function_id": function_id,
                    "namespace": DEFAULT_NAMESPACE,
                    "worker_name": "engine",
                }
            )
    matched: list[tuple[FunctionEntry, str]] = []
    for entry in engine.functions:
        if prefix is not None and not entry.function_id.startswith(prefix):
            continue
        if after is not None and entry.function_id <= after:
            continue
        metadata = entry.metadata
        if not include_internal and isinstance(metadata, dict) and metadata.get("internal") is True:
            continue
        if search is not None and search.lower() not in entry.function_id.lower():
            continue
        worker_name = _worker_name(engine, entry.worker_id)
        names = {worker_name, entry.worker_id}
        if worker is not None and worker not in names:
            continue
        if isinstance(workers, list) and not names.intersection(workers):
            continue
        matched.append((entry, worker_name))
    matched.sort(key=lambda pair: (pair[0].function_id, pair[0].namespace))
    budget = call.engine.config.max_list_answer
    answer: dict[str, JSON] = {"functions": rows}
    last: str | None = None
    for entry, worker_name in matched:
        budget -= entry.info_size + _ROW_OVERHEAD
        # "after" resumes after an id: a page ends between ids, never between the namespaces
        # of one id (the page may then go over by that id's other rows).
        if budget < 0 and last is not None and entry.function_id != last:
            answer["next"] = last
            break
        last = entry.function_id
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
    return answer


def workers_list(call: BuiltinCall) -> JSON:
    """O(workers): the function and invocation counts come from indexes."""
    engine = call.engine
    payload = _payload(call.data)
    search = _str(payload, "search")
    runtime = _str(payload, "runtime")
    rows: list[JSON] = []
    for record in engine.workers.values():
        if record.internal:
            continue  # the engine's own services (the HTTP server) are not workers
        info = record.info
        if search is not None and search.lower() not in record.name.lower():
            continue
        if runtime is not None and info.get("runtime") != runtime:
            continue
        rows.append(
            {
                "id": record.worker_id,
                "name": record.name,
                "description": info.get("description"),
                "version": info.get("version"),
                "namespace": record.namespace,
                "runtime": info.get("runtime"),
                "os": info.get("os"),
                "isolation": info.get("isolation"),
                "pid": info.get("pid"),
                "status": "connected",
                "function_count": engine.functions.count_for(record.worker_id),
                "connected_at_ms": record.connected_at_ms,
                "active_invocations": engine.invocations.active_for(record.worker_id),
                "ip_address": record.peer.rsplit(":", 1)[0],
            }
        )
    return {"workers": rows}


# --- channels ------------------------------------------------------------------------------


def channels_create(call: BuiltinCall) -> JSON:
    payload = _payload(call.data)
    buffer_size = _int(payload, "buffer_size")
    if call.engine.shutting_down:
        raise BuiltinError(ENGINE_SHUTDOWN, "the engine is shutting down")
    try:
        return call.engine.channels.create(call.caller.worker_id, buffer_size)
    except ChannelLimitExceeded as exc:
        raise BuiltinError(LIMIT_EXCEEDED, str(exc)) from exc


def channels_list(call: BuiltinCall) -> JSON:
    _payload(call.data)
    return {"channels": call.engine.channels.describe()}


# --- triggers ------------------------------------------------------------------------------


def triggers_list(call: BuiltinCall) -> JSON:
    """``engine::triggers::list``: ``{"triggers": [{id, namespace, worker_name,
    description}]}``; filters ``search``, ``prefix``, ``worker``, ``include_internal``."""
    engine = call.engine
    payload = _payload(call.data)
    search = _str(payload, "search")
    prefix = _str(payload, "prefix")
    worker = _str(payload, "worker")
    include_internal = _bool(payload, "include_internal")
    rows: list[dict[str, JSON]] = []
    for entry in engine.triggers.types.values():
        if not include_internal and entry.id.startswith(RESERVED_PREFIX):
            continue
        if prefix is not None and not entry.id.startswith(prefix):
            continue
        worker_name = _worker_name(engine, entry.worker_id)
        if worker is not None and worker_name != worker:
            continue
        if search and not matches(search, entry.id, entry.description):
            continue
        rows.append(
            {
                "id": entry.id,
                "namespace": entry.namespace,
                "worker_name": worker_name,
                "description": entry.description,
            }
        )
    rows.sort(key=lambda r: (str(r["id"]), str(r["namespace"])))
    return {"triggers": list[JSON](rows)}


def registered_triggers_list(call: BuiltinCall) -> JSON:
    """``engine::registered-triggers::list``: ``{"registered_triggers": [{id, trigger_type,
    function_id, worker_name, status, config, config_summary}]}``; filters ``search``,
    ``trigger_type``, ``function_id``, ``worker``, ``include_internal``, ``include_pending``
    (parked bindings are listed only when asked, as in iii)."""
    engine = call.engine
    payload = _payload(call.data)
    search = _str(payload, "search")
    trigger_type = _str(payload, "trigger_type")
    function_id = _str(payload, "function_id")
    worker = _str(payload, "worker")
    include_internal = _bool(payload, "include_internal")
    include_pending = _bool(payload, "include_pending")
    rows: list[dict[str, JSON]] = []
    for binding in engine.triggers.bindings.values():
        if binding.status == "pending" and not include_pending:
            continue
        if not include_internal and binding.function_id.startswith(RESERVED_PREFIX):
            continue
        if trigger_type is not None and binding.trigger_type != trigger_type:
            continue
        if function_id is not None and binding.function_id != function_id:
            continue
        worker_name = _function_owner_name(engine, binding.namespace, binding.function_id)
        if worker is not None and worker_name != worker:
            continue
        if search and not matches(search, binding.id, binding.trigger_type, binding.function_id):
            continue
        rows.append(
            {
                "id": binding.id,
                "trigger_type": binding.trigger_type,
                "function_id": binding.function_id,
                "worker_name": worker_name,
                "status": binding.status,
                "config": binding.config,
                "config_summary": config_summary(binding.config),
            }
        )
    rows.sort(key=lambda r: str(r["id"]))
    return {"registered_triggers": list[JSON](rows)}


def _function_owner_name(engine: EngineState, namespace: str, function_id: str) -> str:
    entry = engine.functions.lookup(namespace, function_id)
    if entry is not None:
        return _worker_name(engine, entry.worker_id)
    return function_id.split("::", 1)[0]  # iii's fallback: the id's first segment


def register_trigger(call: BuiltinCall) -> JSON:
    """``engine::register_trigger``: a binding owned by nobody (it outlives the caller's
    connection, as in iii); returns ``{"id": ...}`` for ``engine::unregister_trigger``."""
    payload = _payload(call.data)
    trigger_type = _str(payload, "trigger_type")
    function_id = _str(payload, "function_id")
    trigger_namespace = _str(payload, "trigger_namespace")
    if not trigger_type or not function_id:
        raise BuiltinError(INVALID_PAYLOAD, "'trigger_type' and 'function_id' are required strings")
    namespace = call.caller.namespace
    binding = Binding(
        id=new_uuid(),
        trigger_type=trigger_type,
        function_id=function_id,
        config=payload.get("config"),
        metadata=payload.get("metadata"),
        namespace=namespace,
        home_namespace=namespace,
        trigger_namespace=trigger_namespace,
        owner=None,
    )
    try:
        call.out.extend(call.engine.triggers.bind(binding))
    except BindingRefused as exc:
        raise BuiltinError(TRIGGER_REGISTRATION_FAILED, str(exc)) from exc
    logger.info(
        "durable trigger %s binds %s to %s (%s)",
        binding.id,
        function_id,
        trigger_type,
        binding.status,
    )
    return {"id": binding.id}


def unregister_trigger(call: BuiltinCall) -> JSON:
    """``engine::unregister_trigger``: remove a durable binding, or one of the caller's own, by
    id; ``{"removed": bool}`` (another worker's binding is not removed)."""
    payload = _payload(call.data)
    binding_id = _str(payload, "id")
    _str(payload, "trigger_type")  # accepted for symmetry with the message; unused
    if not binding_id:
        raise BuiltinError(INVALID_PAYLOAD, "'id' is a required string")
    triggers = call.engine.triggers
    removed, out = triggers.unbind(binding_id, owner=None)
    if removed is None:
        removed, out = triggers.unbind(binding_id, owner=call.caller.worker_id)
    call.out.extend(out)
    return {"removed": removed is not None}


Builtin = Callable[[BuiltinCall], JSON]

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
