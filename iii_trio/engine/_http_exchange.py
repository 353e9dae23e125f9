"""What an HTTP request becomes for a function, and what a function's answer becomes for the
HTTP client, as iii shapes them. Synchronous, no I/O (the server in :mod:`._http_server` moves
the bytes).

* :func:`invocation_data` is the payload a handler gets: ``query_params``, ``path_params``,
  ``headers``, ``path`` (the pattern), ``method``, ``body`` (parsed JSON or ``null``),
  ``trigger``, and the refs ``request_body`` (read) and ``response`` (write).
* :func:`response_from_result` turns a returned ``{status_code, headers, body}`` into a
  status, headers and body bytes.
* :func:`control_message` reads the text frames a handler sends on ``response`` before its
  first data frame (``set_status``, ``set_headers``).
* :func:`error_response` is iii's error envelope; :func:`middleware_outcome` reads what a
  middleware function answered.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from http import HTTPStatus
from typing import Final, final
from urllib.parse import parse_qsl

import attrs

from .._errors import RemoteProtocolError
from ..protocol import JSON, dumps, loads
from ._http_routes import Route

#: A response's headers: ``(name, value)`` pairs, in order.
Headers = list[tuple[str, str]]

#: RFC 9110 token characters: what a header name may be made of.
_TOKEN: Final = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
#: Headers the server sets itself (framing and connection management); a handler's are dropped.
_HOP_BY_HOP: Final = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te"}
)
_JSON_HEADERS: Final = [("content-type", "application/json")]


def query_params(query: str) -> dict[str, str]:
    """Query parameters, decoded, one value per name (the last wins), as iii passes them."""
    return dict(parse_qsl(query, keep_blank_values=True))


def request_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Header names lower-cased, one value each (the last wins); a value that is not UTF-8
    becomes ``""``, as iii does."""
    headers: dict[str, str] = {}
    for name, value in raw:
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            text = ""
        headers[name.decode("latin-1").lower()] = text
    return headers


def is_json(headers: dict[str, str]) -> bool:
    """Whether iii buffers and parses this request's body (its content-type names JSON; the
    test is case-sensitive, as iii's)."""
    return "application/json" in headers.get("content-type", "")


def parse_json_body(data: bytes) -> JSON:
    """The parsed body, or ``null`` for an empty or invalid one."""
    if not data:
        return None
    try:
        return loads(data)
    except RemoteProtocolError:
        return None


def invocation_data(
    route: Route,
    *,
    method: str,
    path_params: dict[str, str],
    query: dict[str, str],
    headers: dict[str, str],
    body: JSON,
    request_body: JSON,
    response: JSON,
) -> dict[str, JSON]:
    """The payload the route's function gets."""
    return {
        "query_params": dict[str, JSON](query),
        "path_params": dict[str, JSON](path_params),
        "headers": dict[str, JSON](headers),
        "path": route.path,
        "method": method,
        "body": body,
        "trigger": {"type": "http", "path": route.path, "method": method},
        "request_body": request_body,
        "response": response,
    }


def condition_data(data: dict[str, JSON]) -> dict[str, JSON]:
    """What a route's condition function gets: the payload without the channel refs."""
    return {k: v for k, v in data.items() if k not in ("request_body", "response")}


def middleware_input(
    method: str, path_params: dict[str, str], query: dict[str, str], headers: dict[str, str]
) -> dict[str, JSON]:
    """What a middleware function gets (no body, path or metadata, as in iii)."""
    return {
        "phase": "preHandler",
        "request": {
            "path_params": dict[str, JSON](path_params),
            "query_params": dict[str, JSON](query),
            "headers": dict[str, JSON](headers),
            "method": method,
        },
        "context": {},
    }


@final
@attrs.frozen
class Response:
    """A whole response: status, headers and body bytes."""

    status: int
    headers: Headers
    body: bytes


def status_code(value: JSON, default: int = 200) -> int:
    """A status a handler named, or ``default`` for anything that is not one (100-599)."""
    if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
        return value
    return default


def header_pairs(value: JSON) -> Headers:
    """Headers a handler gave: an object of strings or a list of ``"Name: value"`` strings.
    Invalid names, values that are not strings, hold line breaks or are not ASCII (HTTP/1.1
    sends bytes; h11 takes ASCII), and the headers the server manages itself (framing,
    connection) are skipped."""
    pairs: list[tuple[str, JSON]] = []
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, str) and ":" in item:
                name, _, rest = item.partition(":")
                pairs.append((name.strip(), rest.strip()))
    out: Headers = []
    for name, text in pairs:
        if not isinstance(text, str) or not _TOKEN.match(name):
            continue
        if "\r" in text or "\n" in text or "\0" in text or not text.isascii():
            continue
        if name.lower() in _HOP_BY_HOP:
            continue
        out.append((name, text))
    return out


def _has_content_type(headers: Headers) -> bool:
    return any(name.lower() == "content-type" for name, _ in headers)


def response_from_result(result: JSON) -> Response:
    """What a handler's returned ``{status_code, headers, body}`` sends (iii's rules: a
    missing body is ``{}``; with a content-type a string body is sent as is, ``null`` as
    nothing, anything else as JSON; without one the body is JSON, strings included, and the
    content-type is ``application/json``; a result that is not an object is ``200 {}``)."""
    if not isinstance(result, dict):
        return Response(200, list(_JSON_HEADERS), b"{}")
    status = status_code(result.get("status_code"))
    headers = header_pairs(result.get("headers"))
    body = result.get("body", {})
    if _has_content_type(headers):
        if isinstance(body, str):
            payload = body.encode("utf-8")
        elif body is None:
            payload = b""
        else:
            payload = _json_bytes(body)
    else:
        payload = _json_bytes(body)
        headers.append(("content-type", "application/json"))
    return Response(status, headers, payload)


def _json_bytes(value: JSON) -> bytes:
    return dumps(value).encode("utf-8")


def json_response(status: int, body: JSON, headers: Headers | None = None) -> Response:
    """A JSON response (middleware answers, the engine's own errors)."""
    extra = [] if headers is None else [h for h in headers if h[0].lower() != "content-type"]
    return Response(status, [*_JSON_HEADERS, *extra], _json_bytes(body))


def error_response(
    status: int, code: str, message: str, headers: Headers | None = None
) -> Response:
    """iii's error envelope; a 5xx carries an ``error_id`` to find the log line by."""
    error: dict[str, JSON] = {"code": code, "message": message}
    if status >= 500:
        error["error_id"] = error_id()
    return json_response(status, {"error": error}, headers)


def error_id() -> str:
    """iii's error id: the low 48 bits of the Unix time in nanoseconds, in hex."""
    return format(time.time_ns() & (2**48 - 1), "x")


def not_found() -> Response:
    return json_response(404, {"error": {"code": "NOT_FOUND", "message": "Not Found"}})


def condition_not_met() -> Response:
    return json_response(
        422,
        {
            "error": {"code": "CONDITION_NOT_MET", "message": "Request condition not met"},
            "skipped": True,
        },
    )


def empty_response(status: int, headers: Headers | None = None) -> Response:
    return Response(status, [] if headers is None else headers, b"")


def reason_phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


# --- middleware ----------------------------------------------------------------------------


def middleware_outcome(result: JSON) -> Response | None:
    """A middleware's answer: ``None`` to go on (``continue``, an unknown or missing action,
    ``null``), or the response to send instead of calling the handler (``respond``: its
    ``status_code`` (default 200), ``headers``, and ``body`` always JSON-encoded)."""
    if not isinstance(result, dict) or result.get("action") != "respond":
        return None
    response = result.get("response")
    if not isinstance(response, dict):
        response = {}
    return json_response(
        status_code(response.get("status_code")),
        response.get("body"),
        header_pairs(response.get("headers")),
    )


# --- the response channel ------------------------------------------------------------------


@final
@attrs.frozen
class SetStatus:
    status: int


@final
@attrs.frozen
class SetHeaders:
    headers: Headers


def control_message(text: str) -> SetStatus | SetHeaders | None:
    """A text frame on the ``response`` channel before the body: ``set_status`` (100-599) or
    ``set_headers`` (merged into what was set); anything else is ignored (``None``)."""
    try:
        obj = loads(text)
    except RemoteProtocolError:
        return None
    if not isinstance(obj, dict):
        return None
    kind = obj.get("type")
    if kind == "set_status":
        code = status_code(obj.get("status_code"), default=0)
        return SetStatus(code) if code else None
    if kind == "set_headers":
        return SetHeaders(header_pairs(obj.get("headers")))
    return None


def merge_headers(current: Headers, update: Headers) -> Headers:
    """``update`` replaces the headers of the same names (any case) in ``current``."""
    names = {name.lower() for name, _ in update}
    return [h for h in current if h[0].lower() not in names] + update


def is_preflight(headers: dict[str, str]) -> bool:
    """A CORS preflight request (``OPTIONS`` with ``Origin`` and the method it asks for)."""
    return "origin" in headers and "access-control-request-method" in headers


def preflight_response(headers: dict[str, str]) -> Response:
    """A permissive CORS preflight answer (iii's default when no ``cors`` is configured)."""
    return empty_response(
        200,
        [
            ("access-control-allow-methods", headers.get("access-control-request-method", "*")),
            ("access-control-allow-headers", headers.get("access-control-request-headers", "*")),
            ("access-control-max-age", "600"),
            ("vary", "origin, access-control-request-method, access-control-request-headers"),
        ],
    )


def channel_id_of(refs: dict[str, JSON]) -> str:
    """The channel id in iii's ``{"writer": ref, "reader": ref}``."""
    writer = refs["writer"]
    assert isinstance(writer, dict)
    channel_id = writer["channel_id"]
    assert isinstance(channel_id, str)
    return channel_id


def end_ref(refs: dict[str, JSON], end: str) -> dict[str, JSON]:
    """The ref of one end (``"writer"`` or ``"reader"``) in iii's channel refs."""
    ref = refs[end]
    assert isinstance(ref, dict)
    return ref
