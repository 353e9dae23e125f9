"""Trigger messages from workers, applied to the :class:`TriggerTable`. Synchronous, no I/O:
each returns the ``(worker_id, message)`` pairs to send (the router's part of triggers)."""

from __future__ import annotations

import logging

from .. import _codes as codes
from ..protocol import (
    Error,
    ErrorBody,
    Message,
    RegisterTrigger,
    RegisterTriggerType,
    TriggerRegistrationResult,
    UnregisterTrigger,
    UnregisterTriggerType,
)
from ._registry import DEFAULT_NAMESPACE
from ._triggers import (
    Binding,
    BindingRefused,
    Outgoing,
    TriggerTable,
    TriggerTypeEntry,
    TriggerTypeTaken,
)
from ._workers import WorkerRecord

logger = logging.getLogger("iii_trio.engine")


def trigger_message(table: TriggerTable, record: WorkerRecord, msg: Message) -> list[Outgoing]:
    """Apply a trigger message (``registertriggertype``, ``unregistertriggertype``,
    ``registertrigger``, ``unregistertrigger``, ``triggerregistrationresult``) from ``record``."""
    worker_id = record.worker_id
    if isinstance(msg, RegisterTriggerType):
        entry = TriggerTypeEntry(
            id=msg.id,
            namespace=msg.namespace or record.namespace,
            worker_id=worker_id,
            description=msg.description,
            trigger_request_format=msg.trigger_request_format,
            call_request_format=msg.call_request_format,
        )
        try:
            out = table.register_type(entry)
        except TriggerTypeTaken as exc:
            record.warnings.warning(
                "refused trigger type %s from worker %s: %s", msg.id, worker_id, exc
            )
            body = ErrorBody(code=codes.TRIGGER_TYPE_CONFLICT, message=str(exc))
            return [(worker_id, Error(error=body))]
        logger.info("worker %s provides trigger type %s", worker_id, msg.id)
        return out
    if isinstance(msg, UnregisterTriggerType):
        logger.info("worker %s no longer provides trigger type %s", worker_id, msg.id)
        return table.unregister_type(worker_id, msg.id)
    if isinstance(msg, RegisterTrigger):
        return _bind(table, record, msg)
    if isinstance(msg, UnregisterTrigger):
        removed, withdrawn = table.unbind(msg.id, owner=worker_id)
        if removed is None:
            logger.debug("worker %s unregistered unknown trigger %s", worker_id, msg.id)
        return withdrawn
    assert isinstance(msg, TriggerRegistrationResult)
    if msg.error is not None:
        record.warnings.warning(
            "worker %s rejected trigger %s (%s): %s: %s",
            worker_id,
            msg.id,
            msg.trigger_type,
            msg.error.code,
            msg.error.message,
        )
    return table.result(worker_id, msg)


def _bind(table: TriggerTable, record: WorkerRecord, msg: RegisterTrigger) -> list[Outgoing]:
    binding = Binding(
        id=msg.id,
        trigger_type=msg.trigger_type,
        function_id=msg.function_id,
        config=msg.config,
        metadata=msg.metadata,
        namespace=msg.namespace or DEFAULT_NAMESPACE,
        home_namespace=record.namespace,
        trigger_namespace=msg.trigger_namespace,
        owner=record.worker_id,
    )
    try:
        out = table.bind(binding)
    except BindingRefused as exc:
        record.warnings.warning(
            "refused trigger %s from worker %s: %s", msg.id, record.worker_id, exc
        )
        refusal = TriggerRegistrationResult(
            id=msg.id,
            trigger_type=msg.trigger_type,
            function_id=msg.function_id,
            error=ErrorBody(code=codes.TRIGGER_REGISTRATION_FAILED, message=str(exc)),
        )
        return [(record.worker_id, refusal)]
    logger.info(
        "worker %s bound %s to trigger type %s (%s)",
        record.worker_id,
        msg.function_id,
        msg.trigger_type,
        binding.status,
    )
    return out
