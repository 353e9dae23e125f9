"""What to answer a message that failed to decode. Synchronous, no I/O."""

from __future__ import annotations

import uuid
from typing import Final

from .._errors import RemoteProtocolError
from ..protocol import JSON, Error, ErrorBody, InvocationResult, Message, is_ignored_tag, peek

#: The fields of a refused message that can still say whom to answer.
_SALVAGED: Final = ("type", "invocation_id", "function_id", "action")


def answer_bad_message(raw: str | bytes, exc: RemoteProtocolError) -> Message | None:
    """The answer that says why ``raw`` was refused: an error *result* when the message still
    names an invocation to answer (so its caller does not wait for ever), else an ``error``
    message; ``None`` for iii message types that are safe to drop (the 0.25.0 observe family).
    """
    # Only its small identifying fields are parsed: the rest may be what failed (a message too
    # dense to parse, say), and a refused message over 1 MiB is not searched at all.
    obj: JSON = peek(raw, _SALVAGED)
    if is_ignored_tag(obj):
        return None
    body = ErrorBody(code=exc.hint, message=str(exc))
    invocation = _salvage_invocation(obj)
    if invocation is None:
        return Error(error=body)
    invocation_id, function_id = invocation
    return InvocationResult(invocation_id=invocation_id, function_id=function_id, error=body)


def _salvage_invocation(obj: JSON) -> tuple[str, str] | None:
    """For a broken ``invokefunction`` that still names a UUID id and a function, the pair."""
    if not isinstance(obj, dict) or obj.get("type") != "invokefunction":
        return None
    invocation_id, function_id = obj.get("invocation_id"), obj.get("function_id")
    if not isinstance(invocation_id, str) or not isinstance(function_id, str):
        return None
    try:
        uuid.UUID(invocation_id)
    except ValueError:
        return None
    action = obj.get("action")
    if isinstance(action, dict) and action.get("type") == "void":
        return None
    return invocation_id, function_id
