"""The relay's decoder: messages whose payloads stay JSON text, and a bound on what is parsed.

Theory of operation
-------------------
The engine routes ``invokefunction`` and ``invocationresult`` without looking inside their
payloads (``data``, ``result``, ``metadata``): :func:`decode_lazy` reads the envelope with
msgspec's C decoder into a typed struct whose payload fields are :data:`RawJSON` (the value's
JSON text, a slice of the message, checked for JSON syntax but not parsed into objects), and
builds the usual attrs message around them. The encoder writes a :data:`RawJSON` back as it
came (see :func:`~._codec.encode`), so a call crosses the engine with no payload objects
made and no payload serialized again. The rest of the wire rules are checked exactly as
:func:`~._codec.decode` checks them (types, UUID ids, ``timeout_ms`` range); a payload that
holds a number Python's parser would refuse or turn into infinity (a long exponent or a
300-digit run, found by one regular expression), a built-in call (``engine::``, whose data
the engine reads), and anything the fast decoder refuses go the ordinary way, so errors are
worded as before and nothing ill-formed is relayed.

Every other message is read as an object of still-unparsed fields: only the fields its class
has are parsed (an unknown field, however large, is skipped at C speed and never becomes
Python objects), and each field over :data:`DENSE_MIN` bytes must pass :func:`check_density`
first (an array of a hundred thousand numbers passes; ``[],`` repeated does not). That is the bound on what a message may expand into: see docs/security.md.
"""

from __future__ import annotations

import functools
import re
from typing import Final, overload

import attrs
import msgspec

from .._errors import RemoteProtocolError
from ._codec import (
    _CLASSES,
    MAX_CHANNEL_REFS,
    UNKNOWN_TYPE,
    channel_ids,
    decode,
    loads,
    structure,
    validate_fields,
)
from ._messages import JSON, Message

#: A JSON value kept as its text (``msgspec.Raw``): ``bytes(raw)`` is the text, UTF-8.
RawJSON = msgspec.Raw

#: Fields at most this long (bytes of JSON text) are parsed without a density check.
DENSE_MIN: Final = 64 * 1024
#: A parsed field over this many bytes is also held to :data:`DENSE_BYTES_PER_VALUE`.
DENSE_VALUES_MIN: Final = 1024 * 1024
#: A parsed field over :data:`DENSE_VALUES_MIN` may hold at most one ``[``, ``{`` or ``,`` per
#: this many bytes (one value per 8 bytes: at most about 11 bytes of Python objects per byte).
DENSE_BYTES_PER_VALUE: Final = 8

_NULL: Final = msgspec.Raw(b"null")
#: A number Python's parser refuses (an int of more than 4300 digits) or makes infinite has an
#: exponent of three digits or more, or a run of 300 digits. Also matched inside strings:
#: then the payload is only checked the slow way.
_LONG_EXPONENT: Final = re.compile(rb"[eE][+-]?\d{3}")
_LONG_DIGITS: Final = re.compile(rb"\d{300}")
#: Payloads up to this many bytes are checked by parsing them (see ``_suspect_number``).
_PARSE_CHECK_MAX: Final = 4096
_CALLER_KEY: Final = "_caller_worker_id"
_BUILTIN_PREFIX: Final = "engine::"
#: The longest message :func:`peek` looks into.
PEEK_MAX: Final = 1024 * 1024
#: Bytes of JSON text parsed for a tag or an id at most.
_SMALL: Final = 1024
_encode_str: Final = msgspec.json.Encoder().encode
_EMPTY_OBJECT: Final = re.compile(rb"\{[ \t\n\r]*\}")


class RelayedError(msgspec.Struct, frozen=True, gc=False):
    """The ``error`` of a :class:`RelayedResult` (``ErrorBody``'s fields)."""

    code: str
    message: str
    stacktrace: str | None = None


class RelayedInvoke(msgspec.Struct, tag_field="type", tag="invokefunction", frozen=True, gc=False):
    """An ``invokefunction`` as :func:`decode_lazy` gives it to the relay: checked like
    :class:`InvokeFunction`, its payloads left as :data:`RawJSON`. Only a call to a worker's
    function with no ``action`` or a ``void`` one takes this form (see :attr:`void`)."""

    function_id: str
    invocation_id: str | None = None
    data: msgspec.Raw = _NULL
    traceparent: str | None = None
    baggage: str | None = None
    # (msgspec reads ``Raw | None`` as "null only": absent or null is ``null`` text here.)
    action: msgspec.Raw = _NULL
    metadata: msgspec.Raw = _NULL
    namespace: str | None = None
    timeout_ms: int | None = None

    @property
    def void(self) -> bool:
        """Whether the caller wants no reply (``action`` is ``{"type": "void"}``)."""
        return not _is_null(self.action)


class RelayedResult(
    msgspec.Struct, tag_field="type", tag="invocationresult", frozen=True, gc=False
):
    """An ``invocationresult`` as :func:`decode_lazy` gives it to the relay: checked like
    :class:`InvocationResult`, its ``result`` left as :data:`RawJSON`."""

    invocation_id: str
    function_id: str
    result: msgspec.Raw = _NULL
    error: RelayedError | None = None
    traceparent: str | None = None
    baggage: str | None = None


class ForwardInvoke(
    msgspec.Struct,
    tag_field="type",
    tag="invokefunction",
    omit_defaults=True,
    frozen=True,
    gc=False,
):
    """The ``invokefunction`` the relay sends an executor for a :class:`RelayedInvoke`;
    :func:`~._codec.encode` writes it (``data`` always, the rest when not None)."""

    invocation_id: str
    function_id: str
    data: object
    traceparent: str | None = None
    baggage: str | None = None
    metadata: msgspec.Raw | None = None
    timeout_ms: int | None = None


class ForwardResult(
    msgspec.Struct,
    tag_field="type",
    tag="invocationresult",
    omit_defaults=True,
    frozen=True,
    gc=False,
):
    """The ``invocationresult`` the relay sends a caller for a :class:`RelayedResult`
    (``result`` always written, as for :class:`InvocationResult`)."""

    invocation_id: str
    function_id: str
    result: msgspec.Raw
    error: RelayedError | None = None
    traceparent: str | None = None
    baggage: str | None = None


_ENVELOPE: Final = msgspec.json.Decoder(RelayedInvoke | RelayedResult)
_FIELDS: Final = msgspec.json.Decoder(dict[str, msgspec.Raw])
_parse: Final = msgspec.json.Decoder().decode
#: The wire names of each message class's fields (what :func:`decode_lazy` parses).
_KNOWN: Final[dict[str, frozenset[str]]] = {
    tag: frozenset(field.name for field in attrs.fields(cls)) for tag, cls in _CLASSES.items()
}


def check_density(text: str | bytes | memoryview | msgspec.Raw) -> None:
    """Refuse JSON text that would expand into far more objects than its size suggests.

    Text over :data:`DENSE_MIN` bytes may hold at most one ``[`` or ``{`` per
    :data:`DENSE_BYTES_PER_CONTAINER` bytes (:func:`check_containers`): a message of ``[],``
    repeated (one empty list per 3 bytes, each a 72-byte object plus its slot in the parent)
    would otherwise take 27 times its size in memory and seconds of one thread to parse. Text
    over :data:`DENSE_VALUES_MIN` bytes may also hold at most one ``[``, ``{`` or ``,`` per
    :data:`DENSE_BYTES_PER_VALUE` bytes. Below that, any array of numbers or strings passes (at
    most about 24 bytes of objects per byte of text). Counted at C speed (~1.5 GB/s).

    Raises:
        RemoteProtocolError: over the budget.
    """
    size = len(text)
    if size <= DENSE_MIN:
        return
    data: str | bytes = text if isinstance(text, str | bytes) else bytes(text)
    containers = count_containers(data)
    check_containers(size, containers)
    if size <= DENSE_VALUES_MIN:
        return
    values = containers + (data.count(",") if isinstance(data, str) else data.count(b","))
    if values * DENSE_BYTES_PER_VALUE > size:
        raise RemoteProtocolError(
            f"message too dense to parse: {values} JSON values in {size} bytes (at most one "
            f"per {DENSE_BYTES_PER_VALUE} bytes in a field over {DENSE_VALUES_MIN} bytes)"
        )


#: A message over :data:`DENSE_MIN` bytes may hold at most one ``[`` or ``{`` per this many
#: bytes (checked by :func:`count_containers` before any of it is parsed).
DENSE_BYTES_PER_CONTAINER: Final = 4


def count_containers(text: str | bytes, start: int = 0, end: int | None = None) -> int:
    """The ``[`` and ``{`` characters in ``text[start:end]`` (strings included: an upper bound
    on the arrays and objects it holds), at C speed. A reader of a large message calls it on
    slices, yielding between them, then :func:`check_containers`."""
    if isinstance(text, bytes):
        return text.count(b"[", start, end) + text.count(b"{", start, end)
    return text.count("[", start, end) + text.count("{", start, end)


def check_containers(size: int, containers: int) -> None:
    """Refuse a message of ``size`` bytes with ``containers`` arrays and objects at most, if
    it is over :data:`DENSE_MIN` bytes and holds more than one per
    :data:`DENSE_BYTES_PER_CONTAINER` bytes: ``[],`` repeated is one array per 3 bytes, and
    each costs about 80 bytes once parsed, and a fixed cost to skip even when it is not.

    Raises:
        RemoteProtocolError: over the budget.
    """
    if size > DENSE_MIN and containers * DENSE_BYTES_PER_CONTAINER > size:
        raise RemoteProtocolError(
            f"message too dense to parse: {containers} arrays and objects in {size} bytes "
            f"(at most one per {DENSE_BYTES_PER_CONTAINER} bytes in a message over "
            f"{DENSE_MIN} bytes)"
        )


def decode_lazy(data: str | bytes) -> Message | RelayedInvoke | RelayedResult:
    """Like :func:`~._codec.decode`, but a call to a worker's function and its result come as
    :class:`RelayedInvoke` / :class:`RelayedResult` (payloads left as :data:`RawJSON`), and
    no field of any message is parsed past the density budget (:func:`check_density`). The
    engine's decoder.

    Raises:
        RemoteProtocolError: as :func:`~._codec.decode`, or a field too dense to parse.
    """
    if not isinstance(data, str):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RemoteProtocolError(f"invalid JSON: {exc}") from exc
    form = relay_form(data)
    if form is not None and not (
        isinstance(form, RelayedInvoke) and form.function_id.startswith(_BUILTIN_PREFIX)
    ):
        return form  # (the engine reads a built-in call's data: that one goes the full way)
    return _decode_fields(data)


def relay_form(data: str | bytes) -> RelayedInvoke | RelayedResult | None:
    """The light form of an ``invokefunction`` without ``action`` or an ``invocationresult``,
    checked as :func:`~._codec.decode` checks it, with payloads as :data:`RawJSON`; None for
    any other message, or one the fast decoder cannot vouch for (let :func:`~._codec.decode`
    decide). A worker parses the payload it needs with :func:`parse_raw`.

    Raises:
        RemoteProtocolError: the ids or the deadline break the rules (``validate_fields``).
    """
    if not isinstance(data, str):
        return None  # binary frames: the ordinary path checks their UTF-8
    try:
        form = _ENVELOPE.decode(data)
    except (msgspec.MsgspecError, RecursionError):
        return None  # another message type, or an error the ordinary path words
    if isinstance(form, RelayedInvoke):
        if not (_is_null(form.action) or _is_void(form.action)):
            return None  # enqueue, or a malformed action: the ordinary path words it
        if _suspect_number(form.data) or _suspect_number(form.metadata):
            return None
        validate_fields(form.invocation_id, form.function_id, form.timeout_ms)
        return form
    if _suspect_number(form.result):
        return None
    validate_fields(form.invocation_id, form.function_id, None)
    return form


def _is_null(raw: msgspec.Raw) -> bool:
    return raw is _NULL or bytes(raw) == b"null"


def _is_void(action: msgspec.Raw) -> bool:
    try:
        value = _small_json(action)
    except RemoteProtocolError:
        return False
    return isinstance(value, dict) and value.get("type") == "void"


def parse_raw(raw: msgspec.Raw) -> JSON:
    """A :data:`RawJSON` from :func:`relay_form` as Python objects, by msgspec's C parser
    (which agrees with Python's on every value ``relay_form`` lets through).

    Raises:
        RemoteProtocolError: nested too deeply.
    """
    try:
        value: JSON = _parse(raw)
    except (msgspec.MsgspecError, RecursionError) as exc:
        raise RemoteProtocolError(f"invalid JSON: {exc}") from exc
    return value


def _suspect_number(raw: msgspec.Raw) -> bool:
    """Whether ``raw`` may hold a number Python's parser refuses or makes infinite. A short
    payload is parsed by msgspec, whose limits are Python's (out-of-range floats refused,
    integers of at most 4300 digits): cheaper than any scan of the text. A long one is
    scanned for the only forms such a number can take (then the slow path decides). An absent
    field (the shared ``null`` default) is not parsed at all."""
    if raw is _NULL:
        return False
    if len(raw) <= _PARSE_CHECK_MAX:
        try:
            _parse(raw)
        except (msgspec.MsgspecError, RecursionError):
            return True
        return False
    return bool(_LONG_EXPONENT.search(raw) or _LONG_DIGITS.search(raw))


def _decode_fields(text: str) -> Message:
    """The ordinary path, parsing only the known fields of the message's type."""
    try:
        fields = _FIELDS.decode(text)
    except (msgspec.MsgspecError, RecursionError):
        # Not an object of fields, or not JSON: the ordinary decoder says why (after the
        # density check, so a refused bomb is never parsed).
        check_density(text)
        return decode(text)
    raw_tag = fields.get("type")
    tag = None if raw_tag is None else _small_json(raw_tag)
    known = _KNOWN.get(tag) if isinstance(tag, str) else None
    if known is None:
        # No type, an unknown or ignored one: the ordinary wording, from the small part.
        return structure({"type": tag} if raw_tag is not None else {})
    obj: dict[str, JSON] = {"type": tag}
    for name, raw in fields.items():
        if name in known:
            check_density(raw)
            obj[name] = loads(bytes(raw))
    return structure(obj)


def _small_json(raw: msgspec.Raw) -> JSON:
    if len(raw) > _SMALL:
        return None  # no tag or id is this long
    return loads(bytes(raw))


def peek(data: str | bytes, names: tuple[str, ...]) -> dict[str, JSON] | None:
    """The fields ``names`` of a message object, each parsed only if its text is at most 1
    KiB (else None), the rest skipped unparsed: what can be said about a message that did not
    decode, at a bounded cost. None if ``data`` is not a JSON object, or is over
    :data:`PEEK_MAX` characters (skipping even unparsed costs time: ~4 ms per MiB of the
    densest JSON)."""
    if len(data) > PEEK_MAX:
        return None
    try:
        fields = _FIELDS.decode(data)
        return {name: _small_json(fields[name]) for name in names if name in fields}
    except (msgspec.MsgspecError, RecursionError, RemoteProtocolError):
        return None


# --- payloads that may be raw ------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _caller_key(worker_id: str) -> bytes:
    return b'"_caller_worker_id":' + _encode_str(worker_id)


def forward_call(
    msg: RelayedInvoke, invocation_id: str, caller_id: str, timeout: float
) -> ForwardInvoke:
    """What the relay sends the executor of ``msg``: the call under ``invocation_id``, its
    payload with ``_caller_worker_id`` set to ``caller_id`` (:func:`with_caller`), and the
    deadline the engine gives it (``timeout`` seconds)."""
    return ForwardInvoke(
        invocation_id=invocation_id,
        function_id=msg.function_id,
        data=with_caller(msg.data, caller_id),
        traceparent=msg.traceparent,
        baggage=msg.baggage,
        metadata=None if _is_null(msg.metadata) else msg.metadata,
        timeout_ms=int(timeout * 1000),
    )


def forward_result(msg: RelayedResult, invocation_id: str, function_id: str) -> ForwardResult:
    """What the relay sends the caller for the executor's ``msg``: its result or error under
    the caller's ``invocation_id``."""
    return ForwardResult(
        invocation_id=invocation_id,
        function_id=function_id,
        result=msg.result,
        error=msg.error,
        traceparent=msg.traceparent,
        baggage=msg.baggage,
    )


def is_raw(value: object) -> bool:
    """True for a payload kept as JSON text (:data:`RawJSON`)."""
    return type(value) is msgspec.Raw


def materialize(value: JSON | msgspec.Raw) -> JSON:
    """The payload as Python objects (parsed if it is :data:`RawJSON`).

    Raises:
        RemoteProtocolError: too dense to parse (:func:`check_density`).
    """
    if not isinstance(value, msgspec.Raw):
        return value
    check_density(value)
    return loads(bytes(value))


def payload_channel_ids(value: JSON | msgspec.Raw) -> list[str]:
    """:func:`~._codec.channel_ids` for a payload that may be raw: a raw payload is parsed
    only if its text could hold a ref (it names ``channel_id`` or has a ``\\u`` escape); one
    too dense to parse is taken to hold none."""
    if not isinstance(value, msgspec.Raw):
        return channel_ids(value)
    text = bytes(value)
    # A ref needs the key "channel_id", literally or behind an escape.
    if b"channel_id" not in text and b"\\u" not in text:
        return []
    try:
        return channel_ids(materialize(value))[:MAX_CHANNEL_REFS]
    except RemoteProtocolError:
        return []


@overload
def with_caller(value: msgspec.Raw, worker_id: str) -> msgspec.Raw | JSON: ...
@overload
def with_caller(value: JSON, worker_id: str) -> JSON: ...
def with_caller(value: JSON | msgspec.Raw, worker_id: str) -> JSON | msgspec.Raw:
    """An object payload with ``_caller_worker_id`` set to ``worker_id`` (overriding one the
    caller sent); any other payload unchanged.

    A raw object gets the key appended to its text. If its text may already hold the key
    (literally, or behind a ``\\u`` escape), it is rewritten parsed, unless it is too dense
    to parse: then ours is appended after the caller's, a duplicate key whose last value is
    the one Python's json, JavaScript's ``JSON.parse`` and serde_json keep (docs/protocol.md).
    """
    if type(value) is dict:
        return {**value, _CALLER_KEY: worker_id}
    if not isinstance(value, msgspec.Raw):
        return value
    text = bytes(value)
    if text[:1] != b"{":
        return value
    if b"_caller_worker_id" in text or b"\\u" in text:
        try:
            parsed = materialize(value)
        except RemoteProtocolError:
            pass
        else:
            assert isinstance(parsed, dict)
            return {**parsed, _CALLER_KEY: worker_id}
    key = _caller_key(worker_id)
    if _EMPTY_OBJECT.match(text):
        return msgspec.Raw(b"{" + key + b"}")
    return msgspec.Raw(text[:-1] + b"," + key + b"}")


__all__ = [
    "DENSE_BYTES_PER_CONTAINER",
    "DENSE_BYTES_PER_VALUE",
    "DENSE_MIN",
    "DENSE_VALUES_MIN",
    "UNKNOWN_TYPE",
    "ForwardInvoke",
    "ForwardResult",
    "RawJSON",
    "RelayedError",
    "RelayedInvoke",
    "RelayedResult",
    "check_containers",
    "check_density",
    "count_containers",
    "decode_lazy",
    "forward_call",
    "forward_result",
    "is_raw",
    "materialize",
    "parse_raw",
    "payload_channel_ids",
    "peek",
    "relay_form",
    "with_caller",
]
