"""The JSON codec: round trips, exact wire shapes, and the totality of :func:`decode`.

Totality is h11's fuzz invariant (``fuzz/afl-server.py``): whatever bytes a peer sends,
``decode`` returns a message or raises :class:`~iii_trio.RemoteProtocolError`, nothing else.
We add a second invariant: whatever ``decode`` accepts, ``encode`` can write back out as
valid UTF-8, and it decodes to the same message. An engine relays decoded messages to other
workers, so a message it can decode but not re-encode would crash an innocent connection.
"""

from __future__ import annotations

import json
import math
import re
import typing

import attrs
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

import iii_trio.protocol as proto
from iii_trio import LocalProtocolError, RemoteProtocolError
from iii_trio._codes import INVALID_MESSAGE
from iii_trio.protocol import (
    UNKNOWN_TYPE,
    WIRE_NAMES,
    ActionEnqueue,
    ActionVoid,
    Error,
    ErrorBody,
    InvocationResult,
    InvokeFunction,
    Message,
    Ping,
    Pong,
    RegisterFunction,
    RegisterService,
    RegisterTrigger,
    RegisterTriggerType,
    UnregisterTrigger,
    WorkerRegistered,
    decode,
    encode,
    structure,
    unstructure,
)
from iii_trio.protocol._messages import IGNORED_TAGS

if typing.TYPE_CHECKING:
    import uuid

# --- strategies --------------------------------------------------------------------------

#: Any JSON value (what ``json.loads`` can produce), finite floats only.
json_values: st.SearchStrategy[object] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)

uuid_text = st.uuids().map(str)
non_empty_text = st.text(min_size=1)
error_bodies = st.builds(
    ErrorBody, code=st.text(), message=st.text(), stacktrace=st.none() | st.text()
)
actions = st.none() | st.just(ActionVoid()) | st.builds(ActionEnqueue, queue=st.text())

#: Field type annotation (as written in ``_messages.py``) → strategy for a valid value.
_BY_ANNOTATION: dict[str, st.SearchStrategy[object]] = {
    "str": st.text(),
    "str | None": st.none() | st.text(),
    "JSON": json_values,
    "int | None": st.none() | st.integers(min_value=0),
    "list[str] | None": st.none() | st.lists(st.text(), max_size=4),
    "ErrorBody": error_bodies,
    "ErrorBody | None": st.none() | error_bodies,
    "Action | None": actions,
}

#: Per-field overrides: the codec validates these beyond their Python type.
_OVERRIDES: dict[tuple[type[object], str], st.SearchStrategy[object]] = {
    (InvokeFunction, "invocation_id"): st.none() | uuid_text,
    (InvokeFunction, "function_id"): non_empty_text,
    (InvokeFunction, "timeout_ms"): st.none() | st.integers(0, proto.MAX_TIMEOUT_MS),
    (InvocationResult, "invocation_id"): uuid_text,
    (InvocationResult, "function_id"): non_empty_text,
}

MESSAGE_CLASSES: list[type[object]] = list(WIRE_NAMES)


def message_strategy(cls: type[object]) -> st.SearchStrategy[Message]:
    fields: dict[str, st.SearchStrategy[object]] = {}
    for field in attrs.fields(cls):  # type: ignore[arg-type]
        override = _OVERRIDES.get((cls, field.name))
        if override is not None:
            fields[field.name] = override
            continue
        # The source annotation: cattrs replaces ``field.type`` with the resolved type.
        annotation = cls.__annotations__[field.name]
        if annotation not in _BY_ANNOTATION:  # pragma: no cover - a new field type
            raise AssertionError(f"no strategy for {cls.__name__}.{field.name}: {annotation}")
        fields[field.name] = _BY_ANNOTATION[annotation]
    return typing.cast("st.SearchStrategy[Message]", st.builds(cls, **fields))


any_message = st.sampled_from(MESSAGE_CLASSES).flatmap(message_strategy)


def assert_reencodes(msg: Message) -> None:
    """Whatever decode accepted must go back on the wire (as UTF-8) unchanged."""
    text = encode(msg)
    raw = text.encode("utf-8")  # a lone surrogate would raise here
    assert decode(raw) == msg
    assert decode(text) == msg


def decode_or_protocol_error(data: str | bytes) -> Message | None:
    """h11's fuzz invariant: a message, or RemoteProtocolError; never anything else."""
    msg: Message | None = None
    hint: str | None = None
    try:
        msg = decode(data)
    except RemoteProtocolError as exc:
        hint = exc.hint
    if msg is None:
        assert isinstance(hint, str)
        assert hint
    else:
        assert type(msg) in WIRE_NAMES
    return msg


# --- the message catalogue ---------------------------------------------------------------


def test_every_message_class_is_tagged() -> None:
    union_members = set(typing.get_args(Message))
    assert union_members == set(WIRE_NAMES)
    assert len(set(WIRE_NAMES.values())) == len(WIRE_NAMES)
    for cls, tag in WIRE_NAMES.items():
        assert tag == cls.__name__.lower()
        assert getattr(proto, cls.__name__) is cls
        assert attrs.has(cls)
    assert not IGNORED_TAGS & set(WIRE_NAMES.values())


# --- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("cls", MESSAGE_CLASSES, ids=lambda c: c.__name__)
@given(data=st.data())
def test_round_trip_each_class(cls: type[object], data: st.DataObject) -> None:
    msg = data.draw(message_strategy(cls))
    text = encode(msg)
    assert isinstance(text, str)
    assert decode(text) == msg
    assert decode(text.encode("utf-8")) == msg
    wire = json.loads(text)
    assert wire["type"] == WIRE_NAMES[cls]
    assert structure(unstructure(msg)) == msg
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(msg, "function_id", "other")  # noqa: B010 - mypy would reject the plain form


@given(any_message)
def test_encoding_is_compact_and_omits_none(msg: Message) -> None:
    text = encode(msg)
    wire = json.loads(text)
    assert text == json.dumps(wire, separators=(",", ":"), ensure_ascii=False)
    always = {InvokeFunction: "data", InvocationResult: "result"}.get(type(msg))
    for key, value in wire.items():
        if key != always:
            assert value is not None, f"{key} is None but was not omitted"
    if always is not None:
        assert always in wire


@given(st.lists(any_message, max_size=5))
def test_many_messages_round_trip(msgs: list[Message]) -> None:
    assert [decode(encode(m)) for m in msgs] == msgs


# --- exact wire shapes -------------------------------------------------------------------

ID = "6c1f6a58-8e3e-4c1b-9a56-3f0e4f7b2a10"


@pytest.mark.parametrize(
    ("msg", "wire"),
    [
        (
            InvokeFunction(function_id="greet"),
            {"type": "invokefunction", "function_id": "greet", "data": None},
        ),
        (
            InvokeFunction(
                function_id="greet", invocation_id=ID, data={"name": "x"}, action=ActionVoid()
            ),
            {
                "type": "invokefunction",
                "invocation_id": ID,
                "function_id": "greet",
                "data": {"name": "x"},
                "action": {"type": "void"},
            },
        ),
        (
            InvokeFunction(function_id="f", data=[], action=ActionEnqueue(queue="q")),
            {
                "type": "invokefunction",
                "function_id": "f",
                "data": [],
                "action": {"type": "enqueue", "queue": "q"},
            },
        ),
        (
            InvocationResult(invocation_id=ID, function_id="greet"),
            {
                "type": "invocationresult",
                "invocation_id": ID,
                "function_id": "greet",
                "result": None,
            },
        ),
        (
            InvocationResult(
                invocation_id=ID, function_id="f", error=ErrorBody(code="c", message="m")
            ),
            {
                "type": "invocationresult",
                "invocation_id": ID,
                "function_id": "f",
                "result": None,
                "error": {"code": "c", "message": "m"},
            },
        ),
        (
            WorkerRegistered(worker_id="w"),
            {"type": "workerregistered", "worker_id": "w"},
        ),
        (
            WorkerRegistered(worker_id="w", reattach_token="t", features=[]),
            {"type": "workerregistered", "worker_id": "w", "reattach_token": "t", "features": []},
        ),
        (RegisterFunction(id="a::b"), {"type": "registerfunction", "id": "a::b"}),
        (
            RegisterTrigger(id="t", trigger_type="cron", function_id="f"),
            {"type": "registertrigger", "id": "t", "trigger_type": "cron", "function_id": "f"},
        ),
        (RegisterTriggerType(id="x"), {"type": "registertriggertype", "id": "x"}),
        (RegisterService(id="s"), {"type": "registerservice", "id": "s"}),
        (UnregisterTrigger(id="t"), {"type": "unregistertrigger", "id": "t"}),
        (Ping(), {"type": "ping"}),
        (Pong(), {"type": "pong"}),
        (
            Error(error=ErrorBody(code="AUTH_ERROR", message="no", stacktrace="s")),
            {"type": "error", "error": {"code": "AUTH_ERROR", "message": "no", "stacktrace": "s"}},
        ),
    ],
    ids=lambda v: type(v).__name__ if attrs.has(type(v)) else "",
)
def test_exact_wire_shape(msg: Message, wire: dict[str, object]) -> None:
    text = encode(msg)
    assert json.loads(text) == wire
    assert " " not in text
    assert decode(json.dumps(wire)) == msg


def test_non_ascii_is_written_raw() -> None:
    text = encode(InvokeFunction(function_id="f", data="héllo 🎉"))
    assert "héllo 🎉" in text


def test_encode_rejects_non_json_payloads() -> None:
    bad_values: list[typing.Any] = [float("nan"), float("inf"), {1, 2}, object(), b"bytes"]
    for bad in bad_values:
        with pytest.raises(LocalProtocolError):
            encode(InvokeFunction(function_id="f", data=bad))


# --- decoding rules ----------------------------------------------------------------------


def test_unknown_type_has_hint() -> None:
    for tag in ("nope", "InvokeFunction", "__proto__", "", *sorted(IGNORED_TAGS)):
        with pytest.raises(RemoteProtocolError) as info:
            decode(json.dumps({"type": tag}))
        assert info.value.hint == UNKNOWN_TYPE


@given(st.text())
def test_any_unknown_tag_has_hint(tag: str) -> None:
    assume(tag not in WIRE_NAMES.values())
    with pytest.raises(RemoteProtocolError) as info:
        decode(json.dumps({"type": tag, "function_id": "f"}))
    assert info.value.hint == UNKNOWN_TYPE


@pytest.mark.parametrize(
    "text",
    ['{"function_id":"f"}', '{"type":1}', '{"type":null}', "[]", '"ping"', "null", "", "{"],
)
def test_not_a_message(text: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode(text)
    assert info.value.hint == INVALID_MESSAGE


def test_extra_fields_are_ignored() -> None:
    msg = decode(
        '{"type":"invokefunction","function_id":"f","data":1,"future_field":{"x":[1]},'
        '"action":{"type":"void","extra":true}}'
    )
    assert msg == InvokeFunction(function_id="f", data=1, action=ActionVoid())
    assert decode('{"type":"ping","x":1}') == Ping()
    assert decode('{"type":"error","error":{"code":"c","message":"m","x":2}}') == Error(
        error=ErrorBody(code="c", message="m")
    )


def test_missing_payloads_are_none() -> None:
    assert decode('{"type":"invokefunction","function_id":"f"}') == InvokeFunction(function_id="f")
    assert decode(f'{{"type":"invocationresult","invocation_id":"{ID}","function_id":"f"}}') == (
        InvocationResult(invocation_id=ID, function_id="f")
    )
    assert decode('{"type":"registertrigger","id":"t","trigger_type":"c","function_id":"f"}') == (
        RegisterTrigger(id="t", trigger_type="c", function_id="f", config=None)
    )
    assert decode('{"type":"invokefunction","function_id":"f","data":null,"action":null}') == (
        InvokeFunction(function_id="f")
    )


@pytest.mark.parametrize(
    "text",
    [
        '{"type":"invokefunction"}',  # function_id missing
        '{"type":"invokefunction","function_id":""}',
        '{"type":"invokefunction","function_id":7}',
        '{"type":"invokefunction","function_id":"f","timeout_ms":-1}',
        '{"type":"invokefunction","function_id":"f","timeout_ms":true}',
        '{"type":"invokefunction","function_id":"f","timeout_ms":1.5}',
        '{"type":"invokefunction","function_id":"f","action":{"type":"later"}}',
        '{"type":"invokefunction","function_id":"f","action":{"type":"enqueue"}}',
        '{"type":"invokefunction","function_id":"f","action":"void"}',
        '{"type":"invokefunction","function_id":"f","traceparent":1}',
        f'{{"type":"invocationresult","function_id":"f","invocation_id":"{ID}","error":"boom"}}',
        f'{{"type":"invocationresult","function_id":"f","invocation_id":"{ID}","error":{{}}}}',
        '{"type":"invocationresult","function_id":"f"}',
        '{"type":"workerregistered","worker_id":false}',
        '{"type":"workerregistered","worker_id":"w","features":"abc"}',
        '{"type":"workerregistered","worker_id":"w","features":{"a":1}}',
        '{"type":"workerregistered","worker_id":"w","features":[1]}',
        '{"type":"registertriggertype","id":"x","description":null}',
        '{"type":"error","error":[1,2]}',
        '{"type":"error"}',
    ],
)
def test_wrong_fields_are_rejected(text: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode(text)
    assert info.value.hint == INVALID_MESSAGE


# --- invocation ids ----------------------------------------------------------------------

#: The shapes the Rust ``uuid`` crate (iii's ``Uuid`` fields) accepts: 32 hex digits, the
#: hyphenated 8-4-4-4-12 form, and that form in braces or after ``urn:uuid:``.
_HEX = "[0-9a-fA-F]"
_HYPHENATED = f"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}"
UUID_GRAMMAR = re.compile(
    f"{_HEX}{{32}}|{_HYPHENATED}|\\{{{_HYPHENATED}\\}}|urn:uuid:{_HYPHENATED}"
)


def _invoke_with_id(invocation_id: object) -> str:
    return json.dumps(
        {"type": "invokefunction", "function_id": "f", "invocation_id": invocation_id}
    )


def _result_with_id(invocation_id: object) -> str:
    return json.dumps(
        {"type": "invocationresult", "function_id": "f", "invocation_id": invocation_id}
    )


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "abc",
        "1234",
        "not-a-uuid-at-all-not-a-uuid-at-all",
        "00000000-0000-0000-0000-00000000000g",
        "00000000-0000-0000-0000-0000000000000",
        # Python's uuid.UUID() is far more lenient than the wire format:
        "+0000000000000000000000000000000",  # int(..., 16) accepts a sign
        " 0000000000000000000000000000000",  # ... surrounding whitespace
        "0000000_0000000_0000000_00000000",  # ... and digit separators
        "0000-0000-0000-0000-0000-0000-0000-0000",  # uuid.UUID() drops every hyphen
        "{00000000000000000000000000000000}",  # braces only around the hyphenated form
        "urn:uuid:00000000000000000000000000000000",
        "uuid:00000000-0000-0000-0000-000000000000",
        "00000000-0000-0000-0000-000000000000\n",
    ],
)
def test_non_uuid_invocation_id_rejected(bad: str) -> None:
    for text in (_invoke_with_id(bad), _result_with_id(bad)):
        with pytest.raises(RemoteProtocolError) as info:
            decode(text)
        assert info.value.hint == INVALID_MESSAGE


@pytest.mark.parametrize("bad", [1, 1.5, True, [], {}])
def test_non_string_invocation_id_rejected(bad: object) -> None:
    for text in (_invoke_with_id(bad), _result_with_id(bad)):
        with pytest.raises(RemoteProtocolError):
            decode(text)


@given(st.uuids())
def test_uuid_forms_accepted(value: uuid.UUID) -> None:
    for form in (str(value), str(value).upper(), value.hex, f"{{{value}}}", value.urn):
        assert decode(_invoke_with_id(form)) == InvokeFunction(function_id="f", invocation_id=form)
        assert decode(_result_with_id(form)) == InvocationResult(
            invocation_id=form, function_id="f"
        )


@given(st.text(alphabet="0123456789abcdefABCDEF-{}_+ :nruid\n", min_size=28, max_size=46))
@example("+0000000000000000000000000000000")
def test_accepted_ids_follow_the_uuid_grammar(candidate: str) -> None:
    msg = decode_or_protocol_error(_invoke_with_id(candidate))
    assert (msg is not None) == bool(UUID_GRAMMAR.fullmatch(candidate))


def test_null_invocation_id_means_fire_and_forget() -> None:
    assert decode(_invoke_with_id(None)) == InvokeFunction(function_id="f")
    with pytest.raises(RemoteProtocolError):
        decode(_result_with_id(None))


# --- totality ----------------------------------------------------------------------------


@given(st.text() | st.binary())
def test_decode_is_total(data: str | bytes) -> None:
    msg = decode_or_protocol_error(data)
    if msg is not None:
        assert_reencodes(msg)


_ALL_FIELD_NAMES = sorted(
    {f.name for cls in WIRE_NAMES for f in attrs.fields(cls)}  # type: ignore[arg-type]
    | {"type", "queue", "code", "message"}
)

#: JSON values of every type, including the awkward ones.
wild_values: st.SearchStrategy[object] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**64 + 2)
    | st.integers(min_value=10**300, max_value=10**400)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | uuid_text
    | st.sampled_from(sorted(WIRE_NAMES.values()))
    | st.sampled_from(["void", "enqueue"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(_ALL_FIELD_NAMES) | st.text(max_size=5), children, max_size=5
        )
    ),
    max_leaves=15,
)

garbage_messages: st.SearchStrategy[dict[str, object]] = st.fixed_dictionaries(
    {"type": st.sampled_from(sorted(WIRE_NAMES.values())) | st.sampled_from(sorted(IGNORED_TAGS))},
    optional={name: wild_values for name in _ALL_FIELD_NAMES if name != "type"},
)


@given(garbage_messages)
def test_structured_garbage_is_total(obj: dict[str, object]) -> None:
    text = json.dumps(obj)
    msg = decode_or_protocol_error(text)
    if msg is not None:
        assert_reencodes(msg)
    try:
        direct = structure(obj)  # type: ignore[arg-type]
    except RemoteProtocolError:
        assert msg is None
    else:
        assert direct == msg


@given(any_message, st.sampled_from(_ALL_FIELD_NAMES), wild_values)
def test_valid_message_with_one_field_replaced(msg: Message, name: str, value: object) -> None:
    obj = unstructure(msg)
    obj[name] = value  # type: ignore[assignment]
    decoded = decode_or_protocol_error(json.dumps(obj))
    if decoded is not None:
        assert_reencodes(decoded)


def _with_data(raw: str) -> str:
    return '{"type":"invokefunction","function_id":"f","data":' + raw + "}"


#: JSON the codec must refuse (test_lazy checks the relay's decoder against the same list).
HOSTILE_JSON: list[str] = [
    _with_data("NaN"),
    _with_data("Infinity"),
    _with_data("-Infinity"),
    _with_data("[1, NaN]"),
    _with_data("1e400"),  # overflows to inf: iii's serde_json rejects it as out of range
    _with_data("-1e400"),
    _with_data("1" + "0" * 400 + ".0"),
    _with_data("9" * 5000),  # beyond Python's int-string limit
    '{"type":"invokefunction","function_id":"f","timeout_ms":' + "9" * 5000 + "}",
    _with_data("[" * 100_000 + "]" * 100_000),
    _with_data("{" + '"a":{' * 50_000 + "}" * 50_001),
    "[" * 100_000,
    _with_data('"\\ud800"'),  # a lone surrogate cannot be re-encoded as UTF-8
    _with_data('"\\uDC00x"'),
    _with_data('{"\\ud83d":1}'),
    _with_data('["ok", "\\udfff"]'),
    '{"type":"invokefunction","function_id":"f\\ud800"}',
]


@pytest.mark.parametrize("text", HOSTILE_JSON, ids=lambda t: t[:60])
def test_hostile_json_is_rejected(text: str) -> None:
    for data in (text, text.encode("utf-8")):
        with pytest.raises(RemoteProtocolError):
            decode(data)


def test_paired_surrogate_escapes_are_fine() -> None:
    msg = decode(_with_data('"\\ud83c\\udf89 \\u00e9"'))
    assert msg == InvokeFunction(function_id="f", data="🎉 é")
    assert_reencodes(msg)
    # A literal backslash followed by "ud800" is not an escape.
    msg = decode(_with_data('"\\\\ud800"'))
    assert msg == InvokeFunction(function_id="f", data="\\ud800")
    assert_reencodes(msg)


def test_large_and_deep_but_legal_values_survive() -> None:
    deep: object = "leaf"
    for _ in range(200):
        deep = [deep]
    for data in (2**64 + 1, -(10**300), 1e308, -0.0, 5e-324, deep, {"": {"": None}}):
        msg = decode(_with_data(json.dumps(data)))
        assert isinstance(msg, InvokeFunction)
        assert msg.data == data
        assert_reencodes(msg)
    assert math.copysign(1.0, decode(_with_data("-0.0")).data) == -1.0  # type: ignore[union-attr,arg-type]


@pytest.mark.parametrize(
    "data",
    [b"\xff", b"\xc3(", b'{"type":"ping"}\xff', b"\xef\xbb\xbf{}", "\ufeff{}".encode(), b"\x00"],
)
def test_bad_bytes(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode(data)


def test_bytes_and_text_agree() -> None:
    msg = Ping()
    assert decode(b'{"type":"ping"}') == decode('{"type":"ping"}') == msg
    assert decode(bytearray(b'{"type":"ping"}')) == msg  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "timeout_ms",
    [proto.MAX_TIMEOUT_MS + 1, 10**400, -(10**400), -1],
    ids=["2**53", "1e400", "-1e400", "-1"],
)
def test_timeout_ms_out_of_range(timeout_ms: int) -> None:
    # 10**400 parsed fine and then overflowed ``timeout_ms / 1000`` in the engine (issue 14).
    text = f'{{"type":"invokefunction","function_id":"f","timeout_ms":{timeout_ms}}}'
    with pytest.raises(RemoteProtocolError, match="timeout_ms") as info:
        decode(text)
    assert info.value.hint == INVALID_MESSAGE
    assert len(str(info.value)) < 100  # the number itself is not repeated back


@pytest.mark.parametrize("timeout_ms", [0, 1, proto.MAX_TIMEOUT_MS])
def test_timeout_ms_in_range(timeout_ms: int) -> None:
    msg = decode(f'{{"type":"invokefunction","function_id":"f","timeout_ms":{timeout_ms}}}')
    assert msg == InvokeFunction(function_id="f", timeout_ms=timeout_ms)
    assert isinstance(msg, InvokeFunction) and msg.timeout_ms is not None
    assert math.isfinite(msg.timeout_ms / 1000)
    assert_reencodes(msg)
