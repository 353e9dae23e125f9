"""Function registrations from workers, applied to the :class:`FunctionRegistry`.
Synchronous, no I/O: each returns the ``(worker_id, message)`` pairs to send."""

from __future__ import annotations

import logging
from collections.abc import Callable

import attrs

from .. import _codes as codes
from ..protocol import JSON, Message, RegisterFunction, RegistrationRejected, dumps
from ._config import EngineConfig
from ._registry import RESERVED_PREFIX, FunctionEntry, FunctionRegistry, RegistryLimitExceeded
from ._workers import WorkerRecord

logger = logging.getLogger("iii_trio.engine")


def register_function(
    functions: FunctionRegistry,
    config: EngineConfig,
    record: WorkerRecord,
    msg: RegisterFunction,
    check: Callable[[JSON], str | None] | None,
) -> list[tuple[str, Message]]:
    """Register ``msg`` for ``record``: first registration wins; reserved and empty ids,
    oversized descriptions and the per-worker limit are refused (``registrationrejected``).
    ``check`` vets an HTTP-invoked function's ``invocation`` (``None``: the engine does not
    call HTTP functions)."""
    if msg.id.startswith(RESERVED_PREFIX) or not msg.id:
        return _reject(record, msg.id, owner="engine")
    if msg.invocation is not None and check is not None:
        problem = check(msg.invocation)
        if problem is not None:
            logger.error(
                "worker %s registered HTTP-invoked function %s, refused: %s",
                record.worker_id,
                msg.id,
                problem,
            )
            return []
    elif msg.invocation is not None:
        record.warnings.warning(
            "worker %s registered HTTP-invoked function %s; iii_trio does not call HTTP "
            "endpoints, so calls to it fail with function_not_invokable",
            record.worker_id,
            msg.id,
        )
    info_size = len(msg.description or "") + sum(
        len(dumps(value))
        for value in (msg.metadata, msg.request_format, msg.response_format)
        if value is not None
    )
    entry = FunctionEntry(
        namespace=record.namespace,
        function_id=msg.id,
        worker_id=record.worker_id,
        description=msg.description,
        metadata=msg.metadata,
        request_format=msg.request_format,
        response_format=msg.response_format,
        info_size=info_size,
        invocation=msg.invocation,
    )
    try:
        if info_size > config.max_function_info:
            raise RegistryLimitExceeded(
                f"its metadata, description and formats take {info_size} bytes, more than "
                f"max_function_info ({config.max_function_info})"
            )
        conflict = functions.register(entry)
    except RegistryLimitExceeded as exc:
        record.warnings.warning("refused %s from worker %s: %s", msg.id, record.worker_id, exc)
        return _rejection(record, msg.id, codes.LIMIT_EXCEEDED, owner=record.worker_id)
    if conflict is not None:
        return _reject(record, msg.id, owner=conflict.worker_id)
    logger.debug("worker %s registered %s", record.worker_id, msg.id)
    return []


def _reject(record: WorkerRecord, function_id: str, *, owner: str) -> list[tuple[str, Message]]:
    record.warnings.warning(
        "refused %s from worker %s: already registered by %s",
        function_id,
        record.worker_id,
        owner,
    )
    return _rejection(record, function_id, codes.FUNCTION_NAMESPACE_CONFLICT, owner=owner)


def _rejection(
    record: WorkerRecord, function_id: str, code: str, *, owner: str
) -> list[tuple[str, Message]]:
    rejection = RegistrationRejected(
        code=code,
        namespace=record.namespace,
        function_id=function_id,
        owner_worker_id=owner,
        worker_name=record.name,
    )
    return [(record.worker_id, rejection)]


def move_to_namespace(functions: FunctionRegistry, record: WorkerRecord, namespace: str) -> None:
    """Re-home a worker's functions once it named its namespace (a conflict there loses the
    function, with a warning)."""
    if namespace == record.namespace:
        return
    registry = functions
    owned = registry.owned_by(record.worker_id)
    record.namespace = namespace
    for entry in owned:
        registry.unregister(entry.namespace, entry.function_id, record.worker_id)
        if registry.register(attrs.evolve(entry, namespace=namespace)) is not None:
            record.warnings.warning(
                "worker %s lost %s when it moved to namespace %s: already registered there",
                record.worker_id,
                entry.function_id,
                namespace,
            )
