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
binder's namespace first, then ``default``.

Ownership. A trigger type belongs to the connection that registered it until that connection
leaves or unregisters it: another connection's registration of the same ``(namespace, type)``
is refused (:class:`TriggerTypeTaken`), as for functions. A binding belongs to the connection
that made it (or to nobody, for ``engine::register_trigger``'s durable bindings): only that
connection may replace or remove it, so no worker can take over or read another's bindings
and their configs. A worker that reconnects gets its old connection evicted first (iii's
``reattach``, see the router), so its replayed registrations find their names free.

A provider answers each delivery with ``triggerregistrationresult``. Success marks the binding
acknowledged. An error parks the binding (it is not offered to that connection again, but it
is to the next provider connection) and is forwarded to the binder, as iii does (errors only).

:class:`TriggerTable` is the synchronous bookkeeping (no I/O; it returns ``(worker_id,
message)`` pairs to send). The router (:mod:`._router`) feeds it the trigger messages, and the
built-ins (:mod:`._builtins`) read it. Bindings are indexed by owner, by provider and by type,
so a worker's departure or a new provider costs what they touch, not every binding.

Limitations: a provider's namespace is fixed when its ``registertriggertype`` arrives (the
message's ``namespace``, else the connection's namespace at that moment); iii buffers
registrations until ``engine::workers::register`` instead. The engine provides no trigger types
of its own (iii's ``engine::functions-available`` / ``engine::workers-available``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Final, Literal, final

import attrs

from ..protocol import (
    JSON,
    ErrorBody,
    Message,
    RegisterTrigger,
    TriggerRegistrationResult,
    UnregisterTrigger,
)
from ._registry import DEFAULT_NAMESPACE

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


class TriggerTypeTaken(Exception):
    """Another live connection provides this trigger type (message for the registrant)."""


@final
class TriggerTable:
    """Trigger types and bindings. Synchronous bookkeeping, no I/O.

    Every mutating method returns the ``(worker_id, message)`` pairs the caller must send, in
    order.
    """

    def __init__(self) -> None:
        self.types: dict[tuple[str, str], TriggerTypeEntry] = {}
        self.bindings: dict[str, Binding] = {}
        self._types_by_worker: dict[str, set[tuple[str, str]]] = {}
        #: Binding ids by the worker that made them, by provider, by trigger type.
        self._by_owner: dict[str, set[str]] = {}
        self._by_provider: dict[str, set[str]] = {}
        self._by_type: dict[str, set[str]] = {}

    # --- providers -------------------------------------------------------------------------

    def register_type(self, entry: TriggerTypeEntry) -> list[Outgoing]:
        """Add (or refresh) a provider, then deliver what now resolves to it.

        Raises:
            TriggerTypeTaken: another connection provides ``(namespace, id)``.
        """
        previous = self.types.get(entry.key)
        if previous is not None and previous.worker_id != entry.worker_id:
            raise TriggerTypeTaken(
                f"trigger type '{entry.id}' (namespace {entry.namespace}) is provided by "
                f"worker {previous.worker_id}; it can be provided again once that worker leaves"
            )
        self.types[entry.key] = entry
        self._types_by_worker.setdefault(entry.worker_id, set()).add(entry.key)
        return self._reconcile(self._of_type(entry.id), silent=frozenset())

    def unregister_type(self, worker_id: str, type_id: str) -> list[Outgoing]:
        """Remove ``type_id`` where ``worker_id`` provides it (any namespace)."""
        keys = self._types_by_worker.get(worker_id, set())
        gone = [k for k in keys if k[1] == type_id]
        for key in gone:
            keys.discard(key)
            del self.types[key]
        if not gone:
            return []
        return self._reconcile(self._of_type(type_id), silent=frozenset({worker_id}))

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
        a different request it replaces the binding (withdrawn, then delivered again).

        Raises:
            BindingRefused: an empty id, trigger_type or function_id, or an id that belongs to
                another connection (or to the engine).
        """
        if not binding.id or not binding.trigger_type or not binding.function_id:
            raise BindingRefused("a trigger needs a non-empty id, trigger_type and function_id")
        out: list[Outgoing] = []
        existing = self.bindings.get(binding.id)
        if existing is not None:
            if existing.owner != binding.owner:
                raise BindingRefused(
                    f"trigger id {binding.id} belongs to "
                    f"{'another worker' if existing.owner else 'the engine'}"
                )
            if existing.same_request(binding):
                return []
            out.extend(self._withdraw(existing))
            self._forget(existing)
        self.bindings[binding.id] = binding
        self._index(self._by_owner, binding.owner, binding.id, add=True)
        self._index(self._by_type, binding.trigger_type, binding.id, add=True)
        out.extend(self._reconcile([binding], silent=frozenset()))
        return out

    def unbind(
        self, binding_id: str, *, owner: str | None
    ) -> tuple[Binding | None, list[Outgoing]]:
        """Remove a binding that belongs to ``owner`` (``None``: a durable one) and withdraw it
        from its provider; ``(None, [])`` if there is no such binding of that owner."""
        binding = self.bindings.get(binding_id)
        if binding is None or binding.owner != owner:
            return None, []
        out = self._withdraw(binding)
        self._forget(binding)
        return binding, out

    def result(self, worker_id: str, msg: TriggerRegistrationResult) -> list[Outgoing]:
        """A provider's answer to a delivery. Errors park the binding and go to the binder."""
        binding = self.bindings.get(msg.id)
        if binding is None or binding.provider != worker_id:
            return []  # stale: withdrawn, moved or never delivered to this connection
        if msg.error is None:
            binding.acknowledged = True
            return []
        self._set_provider(binding, None, None)
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
        """A connection ended: drop its types and its bindings, re-resolve what it provided.
        O(what it provided and bound)."""
        for key in self._types_by_worker.pop(worker_id, set()):
            del self.types[key]
        out: list[Outgoing] = []
        for binding_id in list(self._by_owner.get(worker_id, ())):
            binding = self.bindings[binding_id]
            if binding.provider != worker_id:
                out.extend(self._withdraw(binding))
            self._forget(binding)
        served = [self.bindings[b] for b in self._by_provider.get(worker_id, ())]
        out.extend(self._reconcile(served, silent=frozenset({worker_id})))
        return out

    # --- resolution ------------------------------------------------------------------------

    def _of_type(self, type_id: str) -> list[Binding]:
        return [self.bindings[b] for b in self._by_type.get(type_id, ())]

    def _withdraw(self, binding: Binding) -> list[Outgoing]:
        provider = binding.provider
        self._set_provider(binding, None, None)
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
            self._set_provider(binding, *wanted)
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

    # --- indexes ---------------------------------------------------------------------------

    def _set_provider(self, binding: Binding, provider: str | None, namespace: str | None) -> None:
        self._index(self._by_provider, binding.provider, binding.id, add=False)
        binding.provider, binding.provider_namespace = provider, namespace
        self._index(self._by_provider, provider, binding.id, add=True)

    def _forget(self, binding: Binding) -> None:
        del self.bindings[binding.id]
        self._index(self._by_owner, binding.owner, binding.id, add=False)
        self._index(self._by_provider, binding.provider, binding.id, add=False)
        self._index(self._by_type, binding.trigger_type, binding.id, add=False)

    @staticmethod
    def _index(index: dict[str, set[str]], key: str | None, binding_id: str, *, add: bool) -> None:
        if key is None:
            return
        if add:
            index.setdefault(key, set()).add(binding_id)
            return
        ids = index.get(key)
        if ids is not None:
            ids.discard(binding_id)
            if not ids:
                del index[key]

    # --- introspection ---------------------------------------------------------------------

    def status(self, binding_id: str) -> Status | None:
        binding = self.bindings.get(binding_id)
        return None if binding is None else binding.status

    def __len__(self) -> int:
        return len(self.bindings)


def config_summary(config: JSON) -> str:
    """Compact JSON of ``config``, cut to :data:`CONFIG_SUMMARY_MAX_LEN` characters (+ ``…``)."""
    text = json.dumps(config, separators=(",", ":"), ensure_ascii=False)
    if len(text) <= CONFIG_SUMMARY_MAX_LEN:
        return text
    return text[:CONFIG_SUMMARY_MAX_LEN] + "…"


def matches(needle: str, *haystacks: str) -> bool:
    lowered = needle.lower()
    return any(lowered in h.lower() for h in haystacks)
