"""Trigger types and bindings (iii's second primitive), on the engine side.

Theory of operation. A worker *provides* a trigger type (``registertriggertype``); any worker
*binds* one of its functions to a type with a config (``registertrigger``). The engine keeps
two tables and one invariant: every binding is either delivered to exactly one live provider
(``active``) or parked (``pending``). Whenever anything changes — a provider registers,
unregisters or disconnects, a binding is added or removed, a provider rejects a binding — the
table re-resolves the affected bindings and says which messages to send:

* a binding that gains a provider is delivered to it (``registertrigger``, engine → provider);
* a binding that moves away from a provider that is still connected and still wants it is
  withdrawn from it (``unregistertrigger``, engine → provider). A provider that disconnected
  or unregistered the type itself is not told: it knows.

So bindings made before their type exists wait and are delivered when a provider appears; a
provider that reconnects (a new connection re-registering its types) gets every binding
again; a binder that disconnects takes its bindings with it and each provider is told.
Provider lookup follows iii: an explicit ``trigger_namespace`` is strict, otherwise the
binder's namespace first, then ``default``. When two connections provide the same
``(namespace, type)`` the latest registration wins (it is usually the same worker,
reconnected before its old connection was noticed dead); the bindings move to it.

A provider answers each delivery with ``triggerregistrationresult``. Success marks the binding
acknowledged. An error parks the binding (it is not offered to that connection again, but it
is to the next provider connection) and is forwarded to the binder, as iii does (errors only).

:class:`TriggerTable` is the synchronous bookkeeping (no I/O; it returns ``(worker_id,
message)`` pairs to send). :class:`TriggerRouter` is the engine glue: it feeds the table from
the connections, sends what the table says, and implements the ``engine::*`` trigger built-ins.

Limitations: a provider's namespace is fixed when its ``registertriggertype`` arrives (the
message's ``namespace``, else the connection's namespace at that moment); iii buffers
registrations until ``engine::workers::register`` instead. The engine provides no trigger types
of its own (iii's ``engine::functions-available`` / ``engine::workers-available``).
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import TYPE_CHECKING, Final, Literal, final

import attrs

from iii_trio._codes import INVALID_PAYLOAD, TRIGGER_REGISTRATION_FAILED
from iii_trio.protocol import (
    JSON,
    ErrorBody,
    Message,
    RegisterTrigger,
    RegisterTriggerType,
    TriggerRegistrationResult,
    UnregisterTrigger,
    UnregisterTriggerType,
    new_uuid,
)

from ._builtins import BuiltinError
from ._connection import SendFailed
from ._registry import DEFAULT_NAMESPACE, RESERVED_PREFIX

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._connection import WorkerConnection
    from ._engine import Engine

logger = logging.getLogger("iii_trio.engine")

#: ``config_summary`` in ``engine::registered-triggers::list`` is cut to this many characters.
CONFIG_SUMMARY_MAX_LEN: Final = 80

Status = Literal["active", "pending"]
#: A message the table wants sent, and the worker it goes to.
Outgoing = tuple[str, Message]


@attrs.frozen(kw_only=True)
class TriggerTypeEntry:
    """A provided trigger type: ``(namespace, id)`` served by one worker connection."""

    id: str
    namespace: str
    worker_id: str
    description: str = ""
    trigger_request_format: JSON = None
    call_request_format: JSON = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.id)


@attrs.define(kw_only=True, eq=False)
class Binding:
    """One registered trigger: ``function_id`` bound to ``trigger_type`` with ``config``."""

    id: str
    trigger_type: str
    function_id: str
    config: JSON = None
    metadata: JSON = None
    #: Namespace the target function resolves in (sent to the provider).
    namespace: str = DEFAULT_NAMESPACE
    #: The binder's own namespace: where the provider lookup starts.
    home_namespace: str = DEFAULT_NAMESPACE
    #: Provider namespace the binder insisted on (strict), if any.
    trigger_namespace: str | None = None
    #: The binding worker; ``None`` for durable bindings made with ``engine::register_trigger``.
    owner: str | None = None
    #: The provider connection it is delivered to (``None``: pending).
    provider: str | None = None
    provider_namespace: str | None = None
    #: The provider answered the delivery with success.
    acknowledged: bool = False
    #: The provider connection that rejected it (not offered to that connection again).
    rejected_by: str | None = None
    #: The provider's last error, if it rejected the binding.
    error: ErrorBody | None = None

    @property
    def status(self) -> Status:
        return "active" if self.provider is not None else "pending"

    def same_request(self, other: Binding) -> bool:
        """Whether ``other`` asks for exactly this binding (a replayed registration)."""
        return (
            self.trigger_type,
            self.function_id,
            self.config,
            self.metadata,
            self.namespace,
            self.home_namespace,
            self.trigger_namespace,
        ) == (
            other.trigger_type,
            other.function_id,
            other.config,
            other.metadata,
            other.namespace,
            other.home_namespace,
            other.trigger_namespace,
        )


class BindingRefused(Exception):
    """The engine refused a binding (message for the binder)."""


@final
class TriggerTable:
    """Trigger types and bindings. Synchronous bookkeeping, no I/O.

    Every mutating method returns the ``(worker_id, message)`` pairs the caller must send, in
    order.
    """

    def __init__(self) -> None:
        self.types: dict[tuple[str, str], TriggerTypeEntry] = {}
        self.bindings: dict[str, Binding] = {}

    # --- providers -------------------------------------------------------------------------

    def register_type(self, entry: TriggerTypeEntry) -> list[Outgoing]:
        """Add (or refresh, or take over) a provider, then deliver what now resolves to it."""
        previous = self.types.get(entry.key)
        self.types[entry.key] = entry
        if previous is not None and previous.worker_id != entry.worker_id:
            logger.warning(
                "trigger type %s (namespace %s) moves from worker %s to worker %s",
                entry.id,
                entry.namespace,
                previous.worker_id,
                entry.worker_id,
            )
        return self._reconcile(self.bindings.values(), silent=frozenset())

    def unregister_type(self, worker_id: str, type_id: str) -> list[Outgoing]:
        """Remove ``type_id`` where ``worker_id`` provides it (any namespace)."""
        gone = [k for k, e in self.types.items() if e.id == type_id and e.worker_id == worker_id]
        for key in gone:
            del self.types[key]
        if not gone:
            return []
        return self._reconcile(self.bindings.values(), silent=frozenset({worker_id}))

    def provider_of(self, binding: Binding) -> TriggerTypeEntry | None:
        """The provider ``binding`` resolves to right now, ignoring rejections."""
        candidates = (
            [binding.trigger_namespace]
            if binding.trigger_namespace is not None
            else [binding.home_namespace, DEFAULT_NAMESPACE]
        )
        for namespace in candidates:
            entry = self.types.get((namespace, binding.trigger_type))
            if entry is not None:
                return entry
        return None

    # --- bindings --------------------------------------------------------------------------

    def bind(self, binding: Binding) -> list[Outgoing]:
        """Add a binding and deliver it if a provider resolves.

        Re-registering an id with the same request is a no-op (SDKs replay on reconnect); with
        a different request it replaces the binding (withdrawn, then delivered again). A
        registration from another connection takes the binding over: ids are SDK-made UUIDs,
        and a binder that reconnects may replay before its old connection is known to be dead.

        Raises:
            BindingRefused: an empty id, trigger_type or function_id.
        """
        if not binding.id or not binding.trigger_type or not binding.function_id:
            raise BindingRefused("a trigger needs a non-empty id, trigger_type and function_id")
        out: list[Outgoing] = []
        existing = self.bindings.get(binding.id)
        if existing is not None:
            if existing.owner != binding.owner:
                logger.info(
                    "trigger %s passes from %s to worker %s",
                    binding.id,
                    existing.owner or "the engine",
                    binding.owner or "the engine",
                )
            if existing.same_request(binding):
                existing.owner = binding.owner
                return []
            out.extend(self._withdraw(existing))
            del self.bindings[binding.id]
        self.bindings[binding.id] = binding
        out.extend(self._reconcile([binding], silent=frozenset()))
        return out

    def unbind(
        self, binding_id: str, *, owner: str | None = None
    ) -> tuple[Binding | None, list[Outgoing]]:
        """Remove a binding (only ``owner``'s when given) and withdraw it from its provider."""
        binding = self.bindings.get(binding_id)
        if binding is None or (owner is not None and binding.owner != owner):
            return None, []
        del self.bindings[binding_id]
        return binding, self._withdraw(binding)

    def result(self, worker_id: str, msg: TriggerRegistrationResult) -> list[Outgoing]:
        """A provider's answer to a delivery. Errors park the binding and go to the binder."""
        binding = self.bindings.get(msg.id)
        if binding is None or binding.provider != worker_id:
            return []  # stale: withdrawn, moved or never delivered to this connection
        if msg.error is None:
            binding.acknowledged = True
            return []
        binding.provider = binding.provider_namespace = None
        binding.acknowledged = False
        binding.rejected_by = worker_id
        binding.error = msg.error
        if binding.owner is None:
            return []
        return [
            (
                binding.owner,
                TriggerRegistrationResult(
                    id=binding.id,
                    trigger_type=binding.trigger_type,
                    function_id=binding.function_id,
                    error=msg.error,
                ),
            )
        ]

    def remove_worker(self, worker_id: str) -> list[Outgoing]:
        """A connection ended: drop its types and its bindings, re-resolve the rest."""
        for key in [k for k, e in self.types.items() if e.worker_id == worker_id]:
            del self.types[key]
        out: list[Outgoing] = []
        for binding in [b for b in self.bindings.values() if b.owner == worker_id]:
            del self.bindings[binding.id]
            if binding.provider != worker_id:
                out.extend(self._withdraw(binding))
        out.extend(self._reconcile(self.bindings.values(), silent=frozenset({worker_id})))
        return out

    # --- resolution ------------------------------------------------------------------------

    def _withdraw(self, binding: Binding) -> list[Outgoing]:
        provider = binding.provider
        binding.provider = binding.provider_namespace = None
        binding.acknowledged = False
        if provider is None:
            return []
        return [(provider, UnregisterTrigger(id=binding.id, trigger_type=binding.trigger_type))]

    def _reconcile(self, bindings: Iterable[Binding], *, silent: frozenset[str]) -> list[Outgoing]:
        out: list[Outgoing] = []
        for binding in list(bindings):
            target = self.provider_of(binding)
            if target is not None and target.worker_id == binding.rejected_by:
                target = None
            wanted = (None, None) if target is None else (target.worker_id, target.namespace)
            if wanted == (binding.provider, binding.provider_namespace):
                continue
            if binding.provider is not None and binding.provider not in silent:
                out.extend(self._withdraw(binding))
            binding.provider, binding.provider_namespace = wanted
            binding.acknowledged = False
            if target is not None:
                binding.error = None
                out.append(
                    (
                        target.worker_id,
                        RegisterTrigger(
                            id=binding.id,
                            trigger_type=binding.trigger_type,
                            function_id=binding.function_id,
                            config=binding.config,
                            metadata=binding.metadata,
                            namespace=binding.namespace,
                        ),
                    )
                )
        return out

    # --- introspection ---------------------------------------------------------------------

    def status(self, binding_id: str) -> Status | None:
        binding = self.bindings.get(binding_id)
        return None if binding is None else binding.status

    def __len__(self) -> int:
        return len(self.bindings)


@final
class TriggerRouter:
    """Connects the :class:`TriggerTable` to the engine: messages in, messages out, built-ins."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.table = TriggerTable()

    # --- messages from workers -------------------------------------------------------------

    async def handle(self, conn: WorkerConnection, msg: Message) -> bool:
        """Handle a trigger message from ``conn``; ``False`` if ``msg`` is not one."""
        table = self.table
        worker_id = conn.worker_id
        if isinstance(msg, RegisterTriggerType):
            entry = TriggerTypeEntry(
                id=msg.id,
                namespace=msg.namespace or conn.namespace,
                worker_id=worker_id,
                description=msg.description,
                trigger_request_format=msg.trigger_request_format,
                call_request_format=msg.call_request_format,
            )
            logger.info("worker %s provides trigger type %s", worker_id, msg.id)
            out = table.register_type(entry)
        elif isinstance(msg, UnregisterTriggerType):
            logger.info("worker %s no longer provides trigger type %s", worker_id, msg.id)
            out = table.unregister_type(worker_id, msg.id)
        elif isinstance(msg, RegisterTrigger):
            binding = Binding(
                id=msg.id,
                trigger_type=msg.trigger_type,
                function_id=msg.function_id,
                config=msg.config,
                metadata=msg.metadata,
                namespace=msg.namespace or DEFAULT_NAMESPACE,
                home_namespace=conn.namespace,
                trigger_namespace=msg.trigger_namespace,
                owner=worker_id,
            )
            try:
                out = table.bind(binding)
            except BindingRefused as exc:
                logger.warning("refused trigger %s from worker %s: %s", msg.id, worker_id, exc)
                out = [
                    (
                        worker_id,
                        TriggerRegistrationResult(
                            id=msg.id,
                            trigger_type=msg.trigger_type,
                            function_id=msg.function_id,
                            error=ErrorBody(code=TRIGGER_REGISTRATION_FAILED, message=str(exc)),
                        ),
                    )
                ]
            else:
                logger.info(
                    "worker %s bound %s to trigger type %s (%s)",
                    worker_id,
                    msg.function_id,
                    msg.trigger_type,
                    table.status(msg.id),
                )
        elif isinstance(msg, UnregisterTrigger):
            removed, out = table.unbind(msg.id, owner=worker_id)
            if removed is None:
                logger.debug("worker %s unregistered unknown trigger %s", worker_id, msg.id)
        elif isinstance(msg, TriggerRegistrationResult):
            if msg.error is not None:
                logger.warning(
                    "worker %s rejected trigger %s (%s): %s: %s",
                    worker_id,
                    msg.id,
                    msg.trigger_type,
                    msg.error.code,
                    msg.error.message,
                )
            out = table.result(worker_id, msg)
        else:
            return False
        self.engine.notify()
        for target, message in out:
            connection = self.engine.workers.get(target)
            if connection is None:
                continue
            # SendFailed: that worker is going away; its cleanup re-resolves what it had.
            with contextlib.suppress(SendFailed):
                await connection.send(message)
        return True

    def forget_worker(self, worker_id: str) -> None:
        """A connection ended: withdraw its bindings from their providers, park or move the
        bindings it provided."""
        out = self.table.remove_worker(worker_id)
        self.engine.notify()
        self._post(out)

    def _post(self, out: list[Outgoing]) -> None:
        for target, message in out:
            connection = self.engine.workers.get(target)
            if connection is not None:
                connection.post(message)

    # --- built-ins -------------------------------------------------------------------------

    def list_types(self, caller: WorkerConnection, data: JSON) -> JSON:
        """``engine::triggers::list``: ``{"triggers": [{id, namespace, worker_name,
        description}]}``; filters ``search``, ``prefix``, ``worker``, ``include_internal``.

        Raises:
            BuiltinError: a filter has the wrong type.
        """
        payload = _payload(data)
        search = _str_opt(payload, "search")
        prefix = _str_opt(payload, "prefix")
        worker = _str_opt(payload, "worker")
        include_internal = _bool_opt(payload, "include_internal")
        rows: list[dict[str, JSON]] = []
        for entry in self.table.types.values():
            row: dict[str, JSON] = {
                "id": entry.id,
                "namespace": entry.namespace,
                "worker_name": self._worker_name(entry.worker_id),
                "description": entry.description,
            }
            if not include_internal and entry.id.startswith(RESERVED_PREFIX):
                continue
            if prefix is not None and not entry.id.startswith(prefix):
                continue
            if worker is not None and row["worker_name"] != worker:
                continue
            if search and not _matches(search, entry.id, entry.description):
                continue
            rows.append(row)
        rows.sort(key=lambda r: (str(r["id"]), str(r["namespace"])))
        return {"triggers": list[JSON](rows)}

    def list_bindings(self, caller: WorkerConnection, data: JSON) -> JSON:
        """``engine::registered-triggers::list``: ``{"registered_triggers": [{id,
        trigger_type, function_id, worker_name, status, config, config_summary}]}``; filters
        ``search``, ``trigger_type``, ``function_id``, ``worker``, ``include_internal``,
        ``include_pending`` (parked bindings are listed only when asked, as in iii).

        Raises:
            BuiltinError: a filter has the wrong type.
        """
        payload = _payload(data)
        search = _str_opt(payload, "search")
        trigger_type = _str_opt(payload, "trigger_type")
        function_id = _str_opt(payload, "function_id")
        worker = _str_opt(payload, "worker")
        include_internal = _bool_opt(payload, "include_internal")
        include_pending = _bool_opt(payload, "include_pending")
        rows: list[dict[str, JSON]] = []
        for binding in self.table.bindings.values():
            if binding.status == "pending" and not include_pending:
                continue
            if not include_internal and binding.function_id.startswith(RESERVED_PREFIX):
                continue
            if trigger_type is not None and binding.trigger_type != trigger_type:
                continue
            if function_id is not None and binding.function_id != function_id:
                continue
            worker_name = self._function_owner_name(binding.namespace, binding.function_id)
            if worker is not None and worker_name != worker:
                continue
            if search and not _matches(
                search, binding.id, binding.trigger_type, binding.function_id
            ):
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

    def register_durable(self, caller: WorkerConnection, data: JSON) -> JSON:
        """``engine::register_trigger``: a binding owned by nobody (it outlives the caller's
        connection, as in iii); returns ``{"id": ...}`` for ``engine::unregister_trigger``.

        Raises:
            BuiltinError: ``trigger_type``/``function_id`` missing or not strings
                (``invalid_payload``); the binding was refused (``trigger_registration_failed``).
        """
        payload = _payload(data)
        trigger_type = _str_opt(payload, "trigger_type")
        function_id = _str_opt(payload, "function_id")
        trigger_namespace = _str_opt(payload, "trigger_namespace")
        if not trigger_type or not function_id:
            raise BuiltinError(
                INVALID_PAYLOAD, "'trigger_type' and 'function_id' are required strings"
            )
        binding = Binding(
            id=new_uuid(),
            trigger_type=trigger_type,
            function_id=function_id,
            config=payload.get("config"),
            metadata=payload.get("metadata"),
            namespace=caller.namespace,
            home_namespace=caller.namespace,
            trigger_namespace=trigger_namespace,
            owner=None,
        )
        try:
            out = self.table.bind(binding)
        except BindingRefused as exc:
            raise BuiltinError(TRIGGER_REGISTRATION_FAILED, str(exc)) from exc
        logger.info(
            "durable trigger %s binds %s to %s (%s)",
            binding.id,
            function_id,
            trigger_type,
            binding.status,
        )
        self.engine.notify()
        self._post(out)
        return {"id": binding.id}

    def unregister_durable(self, caller: WorkerConnection, data: JSON) -> JSON:
        """``engine::unregister_trigger``: remove any binding by id; ``{"removed": bool}``.

        Raises:
            BuiltinError: ``id`` missing or not a string (``invalid_payload``).
        """
        payload = _payload(data)
        binding_id = _str_opt(payload, "id")
        _str_opt(payload, "trigger_type")  # accepted for symmetry with the message; unused
        if not binding_id:
            raise BuiltinError(INVALID_PAYLOAD, "'id' is a required string")
        removed, out = self.table.unbind(binding_id)
        if removed is not None:
            self.engine.notify()
            self._post(out)
        return {"removed": removed is not None}

    # --- names -----------------------------------------------------------------------------

    def _worker_name(self, worker_id: str) -> str:
        conn = self.engine.workers.get(worker_id)
        return conn.name if conn is not None else worker_id

    def _function_owner_name(self, namespace: str, function_id: str) -> str:
        entry = self.engine.registry.lookup(namespace, function_id)
        if entry is not None:
            return self._worker_name(entry.worker_id)
        return function_id.split("::", 1)[0]  # iii's fallback: the id's first segment


def config_summary(config: JSON) -> str:
    """Compact JSON of ``config``, cut to :data:`CONFIG_SUMMARY_MAX_LEN` characters (+ ``…``)."""
    text = json.dumps(config, separators=(",", ":"), ensure_ascii=False)
    if len(text) <= CONFIG_SUMMARY_MAX_LEN:
        return text
    return text[:CONFIG_SUMMARY_MAX_LEN] + "…"


def _matches(needle: str, *haystacks: str) -> bool:
    lowered = needle.lower()
    return any(lowered in h.lower() for h in haystacks)


def _payload(data: JSON) -> dict[str, JSON]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BuiltinError(INVALID_PAYLOAD, "payload must be a JSON object")
    return data


def _str_opt(payload: dict[str, JSON], key: str) -> str | None:
    value = payload.get(key)
    if value is not None and not isinstance(value, str):
        raise BuiltinError(INVALID_PAYLOAD, f"'{key}' must be a string")
    return value


def _bool_opt(payload: dict[str, JSON], key: str) -> bool:
    value = payload.get(key)
    if value is not None and not isinstance(value, bool):
        raise BuiltinError(INVALID_PAYLOAD, f"'{key}' must be a boolean")
    return bool(value)
