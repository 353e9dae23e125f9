"""The relay decoder (``decode_lazy``, the engine's) and the light forms (``relay_form``, the
SDK's) agree with ``decode`` on everything: the same messages once payloads are parsed, and a
RemoteProtocolError with the same hint where ``decode`` refuses. Plus what only they do:
payloads relayed as text, ``_caller_worker_id`` appended to that text, and the density bounds
against parse bombs."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from iii_trio import RemoteProtocolError
from iii_trio.protocol import (
    DENSE_MIN,
    DENSE_VALUES_MIN,
    ActionEnqueue,
    ActionVoid,
    ForwardInvoke,
    InvocationResult,
    InvokeFunction,
    Message,
    RelayedInvoke,
    RelayedResult,
    check_containers,
    check_density,
    count_containers,
    decode,
    decode_lazy,
    encode,
    parse_raw,
    payload_channel_ids,
    relay_form,
    unstructure,
    with_caller,
)
from tests.protocol import test_codec as codec_tests

any_message = codec_tests.any_message
garbage_messages = codec_tests.garbage_messages
wild_values = codec_tests.wild_values
_ALL_FIELD_NAMES = codec_tests._ALL_FIELD_NAMES
#: The hostile texts ``decode`` refuses (the parameters of test_codec's test).
HOSTILE = codec_tests.HOSTILE_JSON


def materialized(msg: Message | RelayedInvoke | RelayedResult) -> Message:
    """The typed message a light form stands for."""
    if isinstance(msg, RelayedInvoke):
        return InvokeFunction(
            function_id=msg.function_id,
            action=ActionVoid() if msg.void else None,
            invocation_id=msg.invocation_id,
            data=parse_raw(msg.data),
            traceparent=msg.traceparent,
            baggage=msg.baggage,
            metadata=None if msg.metadata is None else parse_raw(msg.metadata),
            namespace=msg.namespace,
            timeout_ms=msg.timeout_ms,
        )
    if isinstance(msg, RelayedResult):
        error = msg.error
        typed = decode(
            json.dumps(
                {
                    "type": "invocationresult",
                    "invocation_id": msg.invocation_id,
                    "function_id": msg.function_id,
                    "result": parse_raw(msg.result),
                    "error": None if error is None else msgspec.structs.asdict(error),
                    "traceparent": msg.traceparent,
                    "baggage": msg.baggage,
                }
            )
        )
        assert isinstance(typed, InvocationResult)
        return typed
    return msg


def outcome(decoder: object, data: str | bytes) -> tuple[str, object]:
    try:
        if decoder is relay_form:
            form = relay_form(data)
            msg = decode(data) if form is None else form
        else:
            msg = decode_lazy(data)
    except RemoteProtocolError as exc:
        return "error", exc.hint
    return "message", materialized(msg)


def assert_agrees(data: str | bytes) -> None:
    try:
        expected: tuple[str, object] = ("message", decode(data))
    except RemoteProtocolError as exc:
        expected = ("error", exc.hint)
    for decoder in (decode_lazy, relay_form):
        assert outcome(decoder, data) == expected, decoder


@given(any_message)
def test_every_message_decodes_the_same(msg: Message) -> None:
    assert_agrees(encode(msg))


@given(any_message, st.sampled_from(_ALL_FIELD_NAMES), wild_values)
def test_one_wild_field_decodes_the_same(msg: Message, name: str, value: object) -> None:
    obj = unstructure(msg)
    obj[name] = value  # type: ignore[assignment]
    assert_agrees(json.dumps(obj))


@given(garbage_messages)
def test_structured_garbage_decodes_the_same(obj: dict[str, object]) -> None:
    assert_agrees(json.dumps(obj))


@given(st.text() | st.binary())
def test_any_text_decodes_the_same(data: str | bytes) -> None:
    assert_agrees(data)


@pytest.mark.parametrize("text", HOSTILE, ids=lambda t: t[:60])
def test_hostile_json_is_rejected_the_same(text: str) -> None:
    for data in (text, text.encode("utf-8")):
        with pytest.raises(RemoteProtocolError):
            decode_lazy(data)
        assert_agrees(data)


# --- the relay path --------------------------------------------------------------------------

CALL = (
    '{"type":"invokefunction","function_id":"f",'
    '"invocation_id":"0b0b0b0b-0000-4000-8000-000000000001","data":%s}'
)


def relayed(data: str) -> RelayedInvoke:
    msg = decode_lazy(CALL % data)
    assert isinstance(msg, RelayedInvoke)
    return msg


def test_payloads_stay_text_and_are_written_back_as_they_came() -> None:
    data = '{"b": [1, 2.50, "\\u00e9"],  "a" : null}'
    msg = relayed(data)
    assert bytes(msg.data) == data.encode()
    forward = ForwardInvoke(invocation_id="x", function_id="f", data=msg.data)
    assert data in encode(forward)


def test_builtin_calls_and_actions_are_decoded_in_full() -> None:
    builtin = decode_lazy(
        '{"type":"invokefunction","function_id":"engine::functions::list","data":{"a":1}}'
    )
    assert builtin == InvokeFunction(function_id="engine::functions::list", data={"a": 1})
    # A void call is relayed too (the engine never reads its data); enqueue is decoded.
    void = decode_lazy('{"type":"invokefunction","function_id":"f","action":{"type":"void"}}')
    assert isinstance(void, RelayedInvoke) and void.void
    plain = decode_lazy('{"type":"invokefunction","function_id":"f"}')
    assert isinstance(plain, RelayedInvoke) and not plain.void
    enqueue = decode_lazy(
        '{"type":"invokefunction","function_id":"f","action":{"type":"enqueue","queue":"q"}}'
    )
    assert isinstance(enqueue, InvokeFunction) and enqueue.action == ActionEnqueue(queue="q")
    for action in ('{"type":"later"}', "{}", "[]", '"void"'):
        with pytest.raises(RemoteProtocolError):
            decode_lazy('{"type":"invokefunction","function_id":"f","action":' + action + "}")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("{}", {"_caller_worker_id": "W"}),
        ("{ \n\t}", {"_caller_worker_id": "W"}),
        ('{"a": 1 }', {"a": 1, "_caller_worker_id": "W"}),
        ('{"_caller_worker_id": "forged", "a": 1}', {"a": 1, "_caller_worker_id": "W"}),
        ('{"_caller_worker_\\u0069d": "forged"}', {"_caller_worker_id": "W"}),
        ("[1]", [1]),
        ('"text"', "text"),
        ("null", None),
    ],
)
def test_the_caller_key_is_set_once_and_last(data: str, expected: object) -> None:
    out = with_caller(relayed(data).data, "W")
    text = encode(ForwardInvoke(invocation_id="x", function_id="f", data=out))
    assert json.loads(text)["data"] == expected
    assert text.count("_caller_worker_id") == (1 if isinstance(expected, dict) else 0)
    assert with_caller({"a": 1, "_caller_worker_id": "forged"}, "W") == {
        "a": 1,
        "_caller_worker_id": "W",
    }


def test_a_dense_object_gets_our_key_last() -> None:
    dense = '{"_caller_worker_id":"forged","x":[' + "1," * DENSE_VALUES_MIN + "1]}"
    text = encode(
        ForwardInvoke(
            invocation_id="x", function_id="f", data=with_caller(relayed(dense).data, "W")
        )
    )
    assert text.count("_caller_worker_id") == 2
    assert json.loads(text)["data"]["_caller_worker_id"] == "W"  # the last one counts


@pytest.mark.parametrize(
    ("data", "ids"),
    [
        ('{"a": 1}', []),
        ('{"r": {"channel_id": "c1", "access_key": "k", "direction": "read"}}', ["c1"]),
        ('[{"channel\\u005fid": "c2", "access_key": "k", "direction": "write"}]', ["c2"]),
        ('{"channel_id": 5}', []),
    ],
)
def test_channel_ids_of_raw_payloads(data: str, ids: list[str]) -> None:
    assert payload_channel_ids(relayed(data).data) == ids


def test_numbers_no_peer_could_read_back_are_refused() -> None:
    for number in ("1e400", "-1e400", "1" + "0" * 400 + ".0", "9" * 5000):
        with pytest.raises(RemoteProtocolError):
            decode_lazy(CALL % number)
    long_ok = "[" + ",".join(["1.5e300"] * 2000) + "]"  # long, with long exponents: still fine
    assert isinstance(decode_lazy(CALL % long_ok), InvokeFunction)


# --- density ---------------------------------------------------------------------------------


def test_density_bounds() -> None:
    check_density("[" + "[]," * 1000 + "[]]")  # small: never counted
    with pytest.raises(RemoteProtocolError, match="too dense"):
        check_density("[" + "[]," * DENSE_MIN + "[]]")
    check_density('["' + "x" * DENSE_MIN + '"]')
    # Arrays of numbers are data, not bombs: dense ones pass up to DENSE_VALUES_MIN bytes...
    numbers = json.dumps(list(range(DENSE_VALUES_MIN // 8)))
    assert DENSE_MIN < len(numbers) <= DENSE_VALUES_MIN
    check_density(numbers)
    check_density(json.dumps([1] * (DENSE_VALUES_MIN // 3)))
    # ...and sparser ones beyond it (one value per 8 bytes at most).
    check_density(json.dumps([f"value {n:07d}" for n in range(DENSE_VALUES_MIN // 8)]))
    with pytest.raises(RemoteProtocolError, match="too dense"):
        check_density(json.dumps([1] * DENSE_VALUES_MIN))
    bomb = "[" + "[]," * DENSE_MIN + "[]]"
    assert count_containers(bomb) == DENSE_MIN + 2
    assert count_containers(bomb.encode(), 0, 4) == 2  # "[[],"
    with pytest.raises(RemoteProtocolError, match="too dense"):
        check_containers(len(bomb), count_containers(bomb))
    floats = "[" + ",".join(["0.25"] * DENSE_MIN) + "]"
    check_containers(len(floats), count_containers(floats))  # one array: fine


def test_known_fields_only_are_parsed() -> None:
    bomb = "[" + "[]," * DENSE_MIN + "[]]"
    # An unknown field is skipped unparsed, a known one is refused.
    assert decode_lazy('{"type":"ping","x":' + bomb + "}") == decode('{"type":"ping"}')
    with pytest.raises(RemoteProtocolError, match="too dense"):
        decode_lazy('{"type":"registerfunction","id":"f","metadata":' + bomb + "}")
