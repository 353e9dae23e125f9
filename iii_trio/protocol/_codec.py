"""JSON text ⇄ message objects, through one private cattrs converter.

:func:`decode` is total: whatever text or bytes it is given, it returns a :data:`Message` or
raises :class:`~iii_trio.RemoteProtocolError` (with a wire ``hint``); no ``KeyError``,
``JSONDecodeError`` or cattrs ``ExceptionGroup`` escapes.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any, Final

import cattrs
import msgspec
from cattrs.strategies import configure_tagged_union

from .._codes import INVALID_MESSAGE
from .._errors import LocalProtocolError, RemoteProtocolError
from ._messages import (
    IGNORED_TAGS,
    JSON,
    WIRE_NAMES,
    Action,
    ActionEnqueue,
    ActionVoid,
    ErrorBody,
    InvocationResult,
    InvokeFunction,
    Message,
    StreamChannelRef,
)

#: Wire tag ``unknown``: the message had a ``type`` this engine does not know.
UNKNOWN_TYPE: Final = "unknown_type"
#: The largest ``timeout_ms`` accepted: 2**53 - 1, the largest integer every JSON peer holds
#: exactly (JavaScript's ``Number.MAX_SAFE_INTEGER``), about 285,000 years. Any deadline is
#: far below it (the engine caps deadlines at ``EngineConfig.max_invocation_timeout``), and
#: below it ``timeout_ms / 1000`` is an ordinary float: a larger integer (JSON allows any
#: number of digits) would overflow float arithmetic wherever it is used.
MAX_TIMEOUT_MS: Final = 2**53 - 1


def _structure_action(value: Any, _: Any) -> Action | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError("action must be an object")
    kind = value.get("type")
    if kind == "void":
        return ActionVoid()
    if kind == "enqueue":
        queue = value.get("queue")
        if not isinstance(queue, str):
            raise TypeError("enqueue action needs a string 'queue'")
        return ActionEnqueue(queue=queue)
    raise ValueError(f"unknown action type {kind!r}")


def _unstructure_action(action: Action | None) -> JSON:
    if action is None:
        return None
    if isinstance(action, ActionEnqueue):
        return {"type": "enqueue", "queue": action.queue}
    return {"type": "void"}


def _strict(kind: type[Any], name: str) -> Callable[[Any, Any], Any]:
    def check(value: Any, _: Any) -> Any:
        # bool is an int subclass: a JSON ``true`` is not a number here.
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise TypeError(f"expected {name}, got {type(value).__name__}")
        return value

    return check


def _structure_float(value: Any, _: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected number, got {type(value).__name__}")
    return float(value)


def _structure_str_list(value: Any, _: Any) -> list[str]:
    # cattrs would iterate any iterable: "abc" would become ["a", "b", "c"].
    if not isinstance(value, list):
        raise TypeError(f"expected array, got {type(value).__name__}")
    return [_strict(str, "string")(item, str) for item in value]


def _field(
    obj: dict[str, Any], key: str, kind: type[Any], name: str, *, required: bool = False
) -> Any:
    value = obj.get(key)
    if value is None:
        if required:
            raise KeyError(f"required field missing @ $.{key}")
        return None
    if type(value) is not kind:  # exact: a JSON true is not an integer
        raise TypeError(f"invalid value for type, expected {name} @ $.{key}")
    return value


def _structure_invoke(obj: dict[str, Any], _: Any) -> InvokeFunction:
    # Hot path (twice per call in the engine): the common case -- every optional string
    # absent or a string -- is checked inline; anything else goes through ``_field`` for the
    # error message.
    get = obj.get
    function_id = get("function_id")
    if type(function_id) is not str:
        function_id = _field(obj, "function_id", str, "str", required=True)
    invocation_id = get("invocation_id")
    traceparent = get("traceparent")
    baggage = get("baggage")
    namespace = get("namespace")
    # Checked in the order of the fields, so the first bad one is the one reported.
    for key, value in (
        ("invocation_id", invocation_id),
        ("traceparent", traceparent),
        ("baggage", baggage),
    ):
        if value is not None and type(value) is not str:
            _field(obj, key, str, "str")
    action = get("action")
    if action is not None:
        action = _structure_action(action, None)
    if namespace is not None and type(namespace) is not str:
        _field(obj, "namespace", str, "str")
    timeout_ms = get("timeout_ms")
    if timeout_ms is not None and type(timeout_ms) is not int:
        _field(obj, "timeout_ms", int, "int")
    return InvokeFunction(
        function_id=function_id,
        invocation_id=invocation_id,
        data=get("data"),
        traceparent=traceparent,
        baggage=baggage,
        action=action,
        metadata=get("metadata"),
        namespace=namespace,
        timeout_ms=timeout_ms,
    )


def _structure_error_body(value: Any) -> ErrorBody | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError("invalid value for type, expected ErrorBody @ $.error")
    return ErrorBody(
        code=_field(value, "code", str, "str", required=True),
        message=_field(value, "message", str, "str", required=True),
        stacktrace=_field(value, "stacktrace", str, "str"),
    )


def _structure_result(obj: dict[str, Any], _: Any) -> InvocationResult:
    get = obj.get
    invocation_id = get("invocation_id")
    if type(invocation_id) is not str:
        invocation_id = _field(obj, "invocation_id", str, "str", required=True)
    function_id = get("function_id")
    if type(function_id) is not str:
        function_id = _field(obj, "function_id", str, "str", required=True)
    traceparent = get("traceparent")
    if traceparent is not None and type(traceparent) is not str:
        _field(obj, "traceparent", str, "str")
    baggage = get("baggage")
    if baggage is not None and type(baggage) is not str:
        _field(obj, "baggage", str, "str")
    error = get("error")
    return InvocationResult(
        invocation_id=invocation_id,
        function_id=function_id,
        result=get("result"),
        error=None if error is None else _structure_error_body(error),
        traceparent=traceparent,
        baggage=baggage,
    )


def _unstructure_invoke(msg: InvokeFunction) -> dict[str, Any]:
    out: dict[str, Any] = {"function_id": msg.function_id}
    if msg.invocation_id is not None:
        out["invocation_id"] = msg.invocation_id
    out["data"] = msg.data  # always written: iii's decoder requires it
    if msg.traceparent is not None:
        out["traceparent"] = msg.traceparent
    if msg.baggage is not None:
        out["baggage"] = msg.baggage
    if msg.metadata is not None:
        out["metadata"] = msg.metadata
    if msg.namespace is not None:
        out["namespace"] = msg.namespace
    if msg.timeout_ms is not None:
        out["timeout_ms"] = msg.timeout_ms
    if msg.action is not None:
        out["action"] = _unstructure_action(msg.action)
    return out


def _unstructure_result(msg: InvocationResult) -> dict[str, Any]:
    out: dict[str, Any] = {
        "invocation_id": msg.invocation_id,
        "function_id": msg.function_id,
        "result": msg.result,  # always written, as the 0.25.0 SDK does
    }
    if msg.error is not None:
        error: dict[str, Any] = {"code": msg.error.code, "message": msg.error.message}
        if msg.error.stacktrace is not None:
            error["stacktrace"] = msg.error.stacktrace
        out["error"] = error
    if msg.traceparent is not None:
        out["traceparent"] = msg.traceparent
    if msg.baggage is not None:
        out["baggage"] = msg.baggage
    return out


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(omit_if_default=True, forbid_extra_keys=False)
    conv.register_structure_hook_func(lambda t: t is object, lambda v, _: v)
    conv.register_unstructure_hook_func(lambda t: t is object, lambda v: v)
    conv.register_structure_hook(str, _strict(str, "string"))
    conv.register_structure_hook(int, _strict(int, "integer"))
    conv.register_structure_hook(bool, _strict(bool, "boolean"))
    conv.register_structure_hook(float, _structure_float)
    conv.register_structure_hook_func(lambda t: t == list[str], _structure_str_list)
    conv.register_structure_hook_func(lambda t: t == Action | None, _structure_action)
    conv.register_unstructure_hook_func(lambda t: t == Action | None, _unstructure_action)
    # The invocation path's two messages get hand-written hooks (same rules, ~3x faster than
    # the generated ones): they are decoded and encoded twice per call by the engine.
    conv.register_structure_hook(InvokeFunction, _structure_invoke)
    conv.register_structure_hook(InvocationResult, _structure_result)
    conv.register_unstructure_hook(InvokeFunction, _unstructure_invoke)
    conv.register_unstructure_hook(InvocationResult, _unstructure_result)
    configure_tagged_union(Message, conv, tag_generator=WIRE_NAMES.__getitem__, tag_name="type")
    return conv


_converter: Final = _make_converter()
#: The invocation path's messages skip the converter's dispatch (same hooks as registered).
_FAST_STRUCTURE: Final[dict[type[Any], Callable[[dict[str, Any], Any], Message]]] = {
    InvokeFunction: _structure_invoke,
    InvocationResult: _structure_result,
}
_FAST_UNSTRUCTURE: Final[dict[type[Any], Callable[[Any], dict[str, Any]]]] = {
    InvokeFunction: _unstructure_invoke,
    InvocationResult: _unstructure_result,
}


def _reject_constant(name: str) -> JSON:
    raise ValueError(f"{name} is not JSON")


def _parse_float(text: str) -> float:
    # 1e400 overflows to inf, which we could never encode again (iii's serde_json rejects it).
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]!r} is out of range")
    return value


_decoder: Final = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_parse_float)
_scan_once: Final[Callable[[str, int], tuple[Any, int]]] = _decoder.scan_once  # type: ignore[attr-defined]
_encoder: Final = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False)


def _make_c_encoder() -> Callable[[Any, int], tuple[str, ...]] | None:
    """The C encoder behind ``_encoder``, made once instead of on every ``encode`` call
    (``JSONEncoder.iterencode`` builds a new one each time, a third of the cost of encoding a
    small message). Without circular-reference markers: a cycle ends in ``RecursionError``,
    which :func:`dumps` reports like any other unserializable value."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has it
        return None
    try:
        encoder: Callable[[Any, int], tuple[str, ...]] = make(
            None,
            _encoder.default,
            json.encoder.encode_basestring,
            None,
            ":",
            ",",
            False,
            False,
            False,
        )
    except TypeError:  # pragma: no cover - a future signature change: use the slow path
        return None
    return encoder


_c_encode: Final = _make_c_encoder()
_raw_encoder: Final = msgspec.json.Encoder()


def loads(data: str | bytes) -> JSON:
    """Parse strict JSON (no NaN/Infinity).

    Raises:
        RemoteProtocolError: not valid UTF-8 JSON, too deeply nested, or an absurd number.
    """
    try:
        text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
        try:
            # The C scanner directly: ``JSONDecoder.decode`` adds two Python frames and two
            # regex matches around it, for surrounding whitespace we rarely see.
            value, end = _scan_once(text, 0)
        except (StopIteration, ValueError, RecursionError):
            end = -1
        if end != len(text):
            value = _decoder.decode(text)  # whitespace around the value, or the error to raise
        if "\\ud" in text or "\\uD" in text:
            # A lone surrogate escape ("\ud800") decodes to a str that cannot be written back
            # as UTF-8: relaying it would crash the receiver's writer. serde_json rejects it.
            _encoder.encode(value).encode("utf-8")
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeError, int limits
        raise RemoteProtocolError(f"invalid JSON: {exc}") from exc
    return value  # type: ignore[no-any-return]


def dumps(value: JSON) -> str:
    """Serialize a JSON value compactly.

    Raises:
        LocalProtocolError: the value is not JSON-serializable (or holds NaN/Infinity).
    """
    try:
        if _c_encode is not None:
            return "".join(_c_encode(value, 0))
        return _encoder.encode(value)  # pragma: no cover
    except (TypeError, ValueError, RecursionError) as exc:
        raise LocalProtocolError(f"value is not JSON-serializable: {exc}") from exc


def structure(obj: JSON) -> Message:
    """Turn a parsed JSON object into a message.

    Raises:
        RemoteProtocolError: not an object, no/unknown ``type``, or wrong field types. An
            ignorable iii tag (the 0.25.0 observe family) gets hint ``unknown_type`` too.
    """
    if not isinstance(obj, dict):
        raise RemoteProtocolError("a message must be a JSON object")
    tag = obj.get("type")
    if not isinstance(tag, str):
        raise RemoteProtocolError("message has no string 'type'")
    cls = _CLASSES.get(tag)
    if cls is None:
        raise RemoteProtocolError(f"unknown message type {tag!r}", hint=UNKNOWN_TYPE)
    fast = _FAST_STRUCTURE.get(cls)
    try:
        msg: Message = fast(obj, cls) if fast is not None else _converter.structure(obj, cls)
    except Exception as exc:  # cattrs raises ExceptionGroups and plain errors alike
        raise RemoteProtocolError(f"invalid {tag!r} message: {_describe(exc)}") from exc
    _validate(msg)
    return msg


def decode(data: str | bytes) -> Message:
    """Parse one wire frame into a message.

    Raises:
        RemoteProtocolError: see :func:`loads` and :func:`structure`.
    """
    return structure(loads(data))


def unstructure(msg: Message) -> dict[str, JSON]:
    """The JSON object for ``msg``, with its ``type`` tag."""
    fast = _FAST_UNSTRUCTURE.get(type(msg))
    if fast is not None:
        # What the tagged-union hook does (the tag goes last), minus two levels of dispatch.
        out = fast(msg)
        out["type"] = WIRE_NAMES[type(msg)]
        return out
    return _converter.unstructure(msg, Message)  # type: ignore[no-any-return]


def encode(msg: Message | msgspec.Struct) -> str:
    """Serialize a message to its wire text. A payload kept as JSON text by
    ``decode_lazy`` (a ``msgspec.Raw``) is written as it came.

    Raises:
        LocalProtocolError: a payload field is not JSON-serializable.
    """
    if isinstance(msg, msgspec.Struct):
        # The relay's forms (protocol._lazy): their payloads are raw JSON text written as it
        # came, or values parsed from the wire by the strict parser (nothing to refuse).
        return _raw_encoder.encode(msg).decode("utf-8")
    return dumps(unstructure(msg))


def encode_result(invocation_id: str, function_id: str, result: JSON) -> str:
    """The wire text of a successful ``invocationresult``: ``encode(InvocationResult(...))``
    without building the message (a worker answers every call with one).

    Raises:
        LocalProtocolError: ``result`` is not JSON-serializable.
    """
    return dumps(
        {
            "invocation_id": invocation_id,
            "function_id": function_id,
            "result": result,
            "type": "invocationresult",
        }
    )


def encode_call(function_id: str, invocation_id: str, data: JSON, timeout_ms: int | None) -> str:
    """The wire text of an ``invokefunction`` with no action, traceparent, baggage, metadata
    or namespace: ``encode(InvokeFunction(...))`` without building the message.

    Raises:
        LocalProtocolError: ``data`` is not JSON-serializable.
    """
    out: dict[str, JSON] = {
        "function_id": function_id,
        "invocation_id": invocation_id,
        "data": data,
    }
    if timeout_ms is not None:
        out["timeout_ms"] = timeout_ms
    out["type"] = "invokefunction"
    return dumps(out)


def structure_ref(obj: JSON) -> StreamChannelRef:
    """A :class:`StreamChannelRef` from its JSON form.

    Raises:
        RemoteProtocolError: not a valid ref.
    """
    if not is_channel_ref(obj):
        raise RemoteProtocolError("not a channel ref")
    assert isinstance(obj, dict)
    return StreamChannelRef(
        channel_id=str(obj["channel_id"]),
        access_key=str(obj["access_key"]),
        direction="read" if obj["direction"] == "read" else "write",
    )


def unstructure_ref(ref: StreamChannelRef) -> dict[str, JSON]:
    return {"channel_id": ref.channel_id, "access_key": ref.access_key, "direction": ref.direction}


def is_channel_ref(obj: object) -> bool:
    """iii's structural test: a dict with string ``channel_id``/``access_key`` and a direction."""
    return (
        isinstance(obj, dict)
        and isinstance(obj.get("channel_id"), str)
        and isinstance(obj.get("access_key"), str)
        and obj.get("direction") in ("read", "write")
    )


#: At most this many channel ids are collected from one payload.
MAX_CHANNEL_REFS: Final = 64


def channel_ids(value: JSON) -> list[str]:
    """The ``channel_id`` of every channel ref in a payload (each once, at most
    :data:`MAX_CHANNEL_REFS`). Iterative, so a deeply nested payload costs no recursion; it
    runs for every call the engine routes, so containers are only pushed, never copied."""
    found: list[str] = []
    stack: list[JSON] = [value]
    pop, push = stack.pop, stack.append
    while stack:
        item = pop()
        if type(item) is dict:
            if "channel_id" in item and is_channel_ref(item):
                channel_id = item["channel_id"]
                if channel_id not in found:
                    found.append(channel_id)  # type: ignore[arg-type]
                    if len(found) >= MAX_CHANNEL_REFS:
                        break
                continue
            children = item.values()
        elif type(item) is list:
            children = item  # type: ignore[assignment]
        else:
            continue
        for child in children:
            kind = type(child)
            if kind is dict or kind is list:
                push(child)
    return found


_CLASSES: Final[dict[str, type[Message]]] = {tag: cls for cls, tag in WIRE_NAMES.items()}  # type: ignore[misc]


def is_ignored_tag(obj: JSON) -> bool:
    """True for iii message types that are safe to drop (the 0.25.0 observe family)."""
    return isinstance(obj, dict) and obj.get("type") in IGNORED_TAGS


_HYPHENATED: Final = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
#: The forms the Rust ``uuid`` crate parses. ``uuid.UUID()`` is laxer: it drops every hyphen and
#: lets ``int()`` accept a sign, whitespace and underscores.
_UUID: Final = re.compile(
    f"[0-9a-fA-F]{{32}}|{_HYPHENATED}|\\{{{_HYPHENATED}\\}}|urn:uuid:{_HYPHENATED}"
)


_HYPHENATED_UUID: Final = re.compile(_HYPHENATED)


def _is_uuid(value: str) -> bool:
    # The form every SDK sends first: one simple pattern is cheaper than the alternation.
    if len(value) == 36 and _HYPHENATED_UUID.fullmatch(value) is not None:
        return True
    return _UUID.fullmatch(value) is not None


def _validate(msg: Message) -> None:
    if isinstance(msg, InvokeFunction):
        validate_fields(msg.invocation_id, msg.function_id, msg.timeout_ms)
    elif isinstance(msg, InvocationResult):
        validate_fields(msg.invocation_id, msg.function_id, None)


def validate_fields(invocation_id: str | None, function_id: str, timeout_ms: int | None) -> None:
    """The rules on an invocation's ids and deadline beyond their JSON types.

    Raises:
        RemoteProtocolError: an id that is not a UUID, an empty function id, or a
            ``timeout_ms`` out of range.
    """
    if invocation_id is not None and not _is_uuid(invocation_id):
        raise RemoteProtocolError(f"invocation_id {invocation_id!r} is not a UUID")
    if not function_id:
        raise RemoteProtocolError("function_id must not be empty")
    if timeout_ms is not None and not 0 <= timeout_ms <= MAX_TIMEOUT_MS:
        raise RemoteProtocolError(f"timeout_ms must be an integer from 0 to {MAX_TIMEOUT_MS}")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, cattrs.BaseValidationError):
        notes = cattrs.transform_error(exc)
        return "; ".join(notes) if notes else str(exc)
    return str(exc) or type(exc).__name__


__all__ = [
    "INVALID_MESSAGE",
    "MAX_TIMEOUT_MS",
    "UNKNOWN_TYPE",
    "channel_ids",
    "decode",
    "dumps",
    "encode",
    "encode_call",
    "encode_result",
    "is_channel_ref",
    "is_ignored_tag",
    "loads",
    "structure",
    "structure_ref",
    "unstructure",
    "unstructure_ref",
]
