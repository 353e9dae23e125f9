"""The RFC 6455 opening handshake over h11, sans-IO."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from http import HTTPStatus
from typing import Final, final
from urllib.parse import parse_qs, unquote_plus, urlsplit

import attrs
import h11

_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: Largest HTTP head (request or status line, headers and the blank line ending them) read
#: during the handshake, in bytes: a server answers a longer request with 431, a client gives
#: up on a longer answer. Nothing past it is ever read before the head is complete.
MAX_REQUEST_HEAD: Final = 16 * 1024


@final
class HandshakeError(Exception):
    """The opening handshake failed.

    Attributes:
        status: the HTTP status the server answered (client side) or should answer
            (server side); 0 when there was no HTTP answer at all.
        body: the response body, if any.
        headers: extra headers the server's answer should carry (``Allow`` with a 405,
            ``Upgrade`` with a 426).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        body: str = "",
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.headers = list(headers)


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode("ascii")


@attrs.frozen(kw_only=True)
class HandshakeRequest:
    """What the server learned from a client's upgrade request."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    key: str


#: What a 426 answer carries: the protocol to upgrade to (RFC 9110 section 15.5.22) and the
#: WebSocket version we speak (RFC 6455 section 4.4).
_UPGRADE_REQUIRED: Final = (("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"))


def _tokens(value: str) -> set[str]:
    return {token.strip().lower() for token in value.split(",")}


def parse_request(event: h11.Request) -> HandshakeRequest:
    """Validate an upgrade request.

    Raises:
        HandshakeError: not a WebSocket upgrade; ``status`` is 405, 426 or 400.
    """
    headers = join_headers(
        (name.decode("latin-1"), value.decode("latin-1")) for name, value in event.headers
    )
    if event.method != b"GET":
        raise HandshakeError(
            "only GET can open a WebSocket", status=405, headers=[("Allow", "GET")]
        )
    if event.http_version != b"1.1":  # RFC 6455 section 4.1; h11 speaks 1.0 and 1.1 only
        raise HandshakeError("a WebSocket upgrade needs HTTP/1.1", status=400)
    if "websocket" not in _tokens(headers.get("upgrade", "")) or "upgrade" not in _tokens(
        headers.get("connection", "")
    ):
        raise HandshakeError(
            "this endpoint speaks WebSocket only (missing 'Upgrade: websocket')",
            status=426,
            headers=_UPGRADE_REQUIRED,
        )
    if headers.get("sec-websocket-version", "").strip() != "13":
        raise HandshakeError(
            "unsupported Sec-WebSocket-Version (need 13)", status=426, headers=_UPGRADE_REQUIRED
        )
    key = headers.get("sec-websocket-key", "").strip()
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError
    except (ValueError, binascii.Error):
        raise HandshakeError("invalid Sec-WebSocket-Key", status=400) from None
    return make_request(event.target.decode("latin-1"), headers, key)


def join_headers(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Header names lower-cased; the values of a repeated header joined with ", "."""
    headers: dict[str, str] = {}
    for name, value in pairs:
        name = name.lower()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def make_request(target: str, headers: dict[str, str], key: str) -> HandshakeRequest:
    """The request for ``target`` (path and query; the last of a repeated parameter wins)."""
    parts = urlsplit(target)
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    return HandshakeRequest(path=parts.path or "/", query=query, headers=headers, key=key)


def refused(status: int, body: str) -> HandshakeError:
    """The client's error for a server that answered the upgrade with HTTP ``status``."""
    return HandshakeError(
        f"server refused the WebSocket upgrade: HTTP {status} {body}".rstrip(),
        status=status,
        body=body,
    )


def accept_response(request: HandshakeRequest) -> h11.InformationalResponse:
    return h11.InformationalResponse(
        status_code=101,
        headers=[
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Accept", accept_key(request.key).encode("ascii")),
        ],
    )


def reject_events(
    status: int,
    body: str,
    extra_headers: Sequence[tuple[str, str]] = (),
    *,
    head: bool = False,
) -> list[h11.Response | h11.Data | h11.EndOfMessage]:
    """An HTTP error answer that closes the connection: a plain-text ``body``, or only its
    headers when ``head`` (the answer to a HEAD request has no body)."""
    payload = body.encode("utf-8")
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(payload))),
        ("Connection", "close"),
        *extra_headers,
    ]
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    response = h11.Response(status_code=status, headers=headers, reason=reason)
    if head:
        return [response, h11.EndOfMessage()]
    return [response, h11.Data(data=payload), h11.EndOfMessage()]


#: ``name=value`` pairs, as in a query string (or the repr of one in an h11 error message).
_PARAM: Final = re.compile(r"(?<![\w%.+-])([\w%.+-]+)=([^&\s#]*)")
#: Query parameters that carry secrets: the engine token and channel access keys.
_SECRET_PARAMS: Final = frozenset({"token", "key"})
#: Credentials in headers: an ``Authorization`` (or ``Proxy-Authorization``) value, to the
#: end of its line, and any bearer token wherever it shows up.
_SECRET_HEADER: Final = re.compile(r"(?i)(authorization\s*:\s*)[^\r\n]*|(bearer\s+)[^\s,]+")
REDACTED: Final = "<redacted>"


def _redact_param(match: re.Match[str]) -> str:
    # Decoded as parse_qs decodes names, so that ``?tok%65n=`` is caught as ``token`` is.
    if unquote_plus(match[1]).lower() in _SECRET_PARAMS:
        return f"{match[1]}={REDACTED}"  # the whole value: parse_qs splits on "&" only
    value = match[2]
    if "=" in value:
        # Another pair inside this value, e.g. after the ";" some clients use as a separator.
        return f"{match[1]}={_PARAM.sub(_redact_param, value)}"
    return match[0]


def redact(text: str) -> str:
    """``text`` (a request target, or an error message quoting part of a request) with the
    values of ``token`` and ``key`` parameters and of ``Authorization`` headers replaced by
    ``<redacted>``, for logs and error answers. Errs on the side of hiding too much: a value
    runs to the next ``&``, whitespace or ``#`` (and a header's to the end of its line)."""
    if "=" in text:
        text = _PARAM.sub(_redact_param, text)
    return _SECRET_HEADER.sub(lambda m: f"{m[1] or m[2]}{REDACTED}", text)


@attrs.frozen(kw_only=True)
class ClientTarget:
    """Where a ``ws://`` URL points."""

    secure: bool
    host: str
    port: int
    resource: str  # path + query


def parse_ws_url(url: str) -> ClientTarget:
    """Split a ``ws://`` or ``wss://`` URL.

    Raises:
        ValueError: another scheme, or no host.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"not a ws:// or wss:// URL: {url!r}")
    if not parts.hostname:
        raise ValueError(f"URL has no host: {url!r}")
    secure = parts.scheme == "wss"
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    return ClientTarget(
        secure=secure,
        host=parts.hostname,
        port=parts.port or (443 if secure else 80),
        resource=resource,
    )


def client_request(target: ClientTarget, key: str, headers: list[tuple[str, str]]) -> h11.Request:
    host = target.host if ":" not in target.host else f"[{target.host}]"
    default_port = 443 if target.secure else 80
    host_header = host if target.port == default_port else f"{host}:{target.port}"
    return h11.Request(
        method="GET",
        target=target.resource,
        headers=[
            ("Host", host_header),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key),
            ("Sec-WebSocket-Version", "13"),
            *headers,
        ],
    )


def new_client_key() -> str:
    return base64.b64encode(os.urandom(16)).decode("ascii")


def check_accept(event: h11.InformationalResponse, key: str) -> None:
    """Check the server's 101 answer.

    Raises:
        HandshakeError: the server's ``Sec-WebSocket-Accept`` does not match.
    """
    for name, value in event.headers:
        if name.lower() == b"sec-websocket-accept":
            if value.decode("latin-1").strip() == accept_key(key):
                return
            break
    raise HandshakeError("server sent a wrong Sec-WebSocket-Accept", status=101)
