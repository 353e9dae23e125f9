"""Running the invocations the engine sends to this worker.

Each invocation runs in its session's nursery (a lost connection cancels it), through the
session's :class:`~._inline.InlineRunner`: without a task of its own if its handler returns
without waiting, in a task of its own otherwise. The
handler gets the payload with every channel ref replaced by a live end owned by the
invocation: closed cleanly when the handler returns, aborted (the peer sees why) when it raises
or is cancelled. The handler is cancelled at the call's deadline (``timeout_ms``), by the rule
the engine applies: a handler with channel ends is cut only once they moved no data for that
long (see :mod:`._calls`). What the handler returns, or how it failed, goes back as the
``invocationresult``; a failure inside nested nurseries is reported by its leaf exceptions
(``RuntimeError: disk on fire``), never by the group's own text.
"""

from __future__ import annotations

import logging
import math
import traceback
from functools import partial
from typing import Any, Final

import attrs
import trio

from .. import _codes as codes
from .._errors import LocalProtocolError, RemoteProtocolError
from .._unwrap import describe
from ..protocol import (
    JSON,
    ErrorBody,
    InvocationResult,
    InvokeFunction,
    RelayedInvoke,
    StreamChannelRef,
    encode_result,
    parse_raw,
)
from ._calls import follow_progress
from ._channels import ChannelEndpoint, ChannelReader, ChannelWriter
from ._functions import FunctionSpec
from ._refs import contains_ref, payload_to_json, replace_refs
from ._session import Session

logger = logging.getLogger("iii_trio.worker")

#: Seconds to tell a channel's peer why we stop, when cancelled.
ABORT_GRACE: Final = 1.0

ChannelEnd = ChannelReader | ChannelWriter


def submit_invocation(
    session: Session,
    msg: InvokeFunction | RelayedInvoke,
    spec: FunctionSpec | None,
    endpoint: ChannelEndpoint,
) -> None:
    """Run ``msg`` with ``spec``'s handler in the session's runner and send the answer (none
    for a void call). Must not block (the session's reader calls it)."""
    data: JSON = None
    if isinstance(msg, RelayedInvoke):
        try:
            data = parse_raw(msg.data)
        except RemoteProtocolError as exc:  # pragma: no cover - relay_form checked it
            _answer(session, msg, None, ErrorBody(code=codes.INVALID_MESSAGE, message=str(exc)))
            return
    else:
        data = msg.data
    timeout = math.inf if msg.timeout_ms is None else msg.timeout_ms / 1000
    runner = session.runner
    if spec is not None and contains_ref(data):
        runner.submit(partial(run_invocation, session, msg, data, spec, endpoint, timeout))
        return
    # The common case: no channel ends, so the deadline is fixed. The runner applies it only
    # if the handler waits (one that returns without waiting cannot be cancelled anyway).
    runner.submit(
        partial(_run_plain, session, msg, data, spec),
        deadline=trio.current_time() + timeout,
        on_timeout=partial(_past_deadline, msg.function_id),
    )


async def _run_plain(
    session: Session, msg: InvokeFunction | RelayedInvoke, data: JSON, spec: FunctionSpec | None
) -> None:
    if spec is None:
        error = ErrorBody(
            code=codes.FUNCTION_NOT_FOUND, message=f"Function '{msg.function_id}' not found"
        )
        _answer(session, msg, None, error)
        return
    try:
        result = await (spec.handler(data) if spec.is_async else spec.call(data))
    except Exception as exc:
        _answer(session, msg, None, _failure(exc))
    else:
        _answer(session, msg, result, None)


def _past_deadline(function_id: str) -> None:
    # The engine already answered the caller with invocation_timeout.
    logger.warning("%s ran past its deadline and was cancelled", function_id)


def _failure(exc: Exception) -> ErrorBody:
    return ErrorBody(
        code=codes.INVOCATION_FAILED,
        message=describe(exc),
        stacktrace="".join(traceback.format_exception(exc)),
    )


async def run_invocation(
    session: Session,
    msg: InvokeFunction | RelayedInvoke,
    data: JSON,
    spec: FunctionSpec,
    endpoint: ChannelEndpoint,
    timeout: float,
) -> None:
    """Run ``msg``, whose payload ``data`` holds channel refs, with ``spec``'s handler, and
    send the answer (none for a void call)."""
    error: ErrorBody | None = None
    result: Any = None
    with trio.CancelScope() as scope:
        try:
            result = await run_handler(spec, data, endpoint, scope=scope, timeout=timeout)
        except Exception as exc:
            error = _failure(exc)
    if scope.cancelled_caught:
        _past_deadline(msg.function_id)
        return
    _answer(session, msg, result, error)


def _answer(
    session: Session, msg: InvokeFunction | RelayedInvoke, result: Any, error: ErrorBody | None
) -> None:
    if msg.invocation_id is None:
        return
    if error is None:
        try:
            text = encode_result(msg.invocation_id, msg.function_id, payload_to_json(result))
        except LocalProtocolError:
            pass  # answered below, with the reason
        else:
            # More calls of the same burst waiting to run: their answers share one write.
            session.post_encoded(text, burst=session.runner.backlog)
            return
    reply = InvocationResult(
        invocation_id=msg.invocation_id,
        function_id=msg.function_id,
        result=None if error is not None else payload_to_json(result),
        error=error,
    )
    try:
        session.post(reply)
    except LocalProtocolError as exc:
        session.post(
            attrs.evolve(
                reply,
                result=None,
                error=ErrorBody(
                    code=codes.INVOCATION_FAILED,
                    message=f"the handler's result is not JSON: {exc}",
                ),
            )
        )


async def run_handler(
    spec: FunctionSpec,
    data: JSON,
    endpoint: ChannelEndpoint,
    *,
    scope: trio.CancelScope,
    timeout: float = math.inf,
) -> Any:
    """Call a handler with the channel refs in ``data`` opened as live ends that belong to
    this invocation: closed cleanly when the handler returns, aborted if it raises or is
    cancelled. ``scope`` is cancelled at the deadline: ``timeout`` seconds from now, or, with
    channel ends, once they moved no data for that long.

    Raises:
        Exception: whatever the handler raised.
    """
    now = trio.current_time()
    if not contains_ref(data):
        scope.deadline = now + timeout
        return await spec.call(data)
    ends: list[ChannelEnd] = []
    async with trio.open_nursery() as nursery:

        def open_end(ref: StreamChannelRef) -> ChannelEnd:
            end: ChannelEnd
            if ref.direction == "read":
                end = ChannelReader(ref, endpoint, nursery)
            else:
                end = ChannelWriter(ref, endpoint, nursery)
            ends.append(end)
            return end

        live = replace_refs(data, open_end)
        watch = trio.CancelScope()
        if math.isfinite(timeout):
            nursery.start_soon(_watch_progress, watch, scope, timeout, ends, now)
        try:
            result = await spec.call(live)
        except BaseException as exc:
            watch.cancel()
            await abort_ends(ends, exc)
            if isinstance(exc, Exception):
                failure = exc
            else:
                raise
        else:
            watch.cancel()
            await close_ends(ends)
            return result
    raise failure


async def _watch_progress(
    watch: trio.CancelScope,
    scope: trio.CancelScope,
    timeout: float,
    ends: list[ChannelEnd],
    since: float,
) -> None:
    with watch:
        await follow_progress(scope, timeout, ends, since=since)


async def close_ends(ends: list[ChannelEnd]) -> None:
    """Close channel ends cleanly (writers deliver their end of stream)."""
    for end in ends:
        await end.aclose()


async def abort_ends(ends: list[ChannelEnd], exc: BaseException) -> None:
    """Abort channel ends so their peers see an error naming ``exc``; works when cancelled."""
    reason = "cancelled" if isinstance(exc, trio.Cancelled) else _abort_reason(exc)
    with trio.CancelScope(shield=True), trio.move_on_after(ABORT_GRACE):
        for end in ends:
            await end.abort(reason[:100])
    for end in ends:  # past the grace period: drop whatever is left
        await trio.aclose_forcefully(end)


def _abort_reason(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return describe(exc)
    return f"{type(exc).__name__}: {exc}".rstrip(": ")
