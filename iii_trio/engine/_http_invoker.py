"""HTTP-invoked functions: a function registered with an ``invocation`` config
(``{url, method, timeout_ms, headers, auth}``) is run by the engine calling that URL.

Theory of operation
-------------------
The caller is an internal worker of the router (:data:`HTTP_FUNCTIONS_WORKER`, see
``Router.serve_http_functions``): a call to such a function is routed to it as an
``invokefunction``, and it answers with an ``invocationresult`` like any worker, so deadlines,
limits and error codes are the router's. Each call is a task in the invoker's nursery.

The URL is checked when the function is registered and again on every call, after name
resolution, against the address actually connected to (so a name that resolves elsewhere later
is caught): https only and public addresses only, unless ``http_functions_allow_http`` /
``http_functions_allow_private`` say otherwise (docs/security.md). A registration that fails
the check is refused with an error in the log (calls then get ``function_not_found``, as in
iii).

The request, as iii's: the payload as a JSON body, ``x-iii-Function-Path``,
``x-iii-Invocation-ID``, ``x-iii-Timestamp``, the config's headers, then the auth header
(``bearer``, ``api_key`` or an ``hmac`` signature, secrets read from the engine's environment
by name). Redirects are not followed. The answer: 2xx is the JSON result (empty: ``null``);
an error status becomes an error (the body's ``{"error": {code, message}}``, else
``http_error``); a network failure or timeout is ``http_request_failed``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import ssl
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Final, final
from urllib.parse import urlsplit

import attrs
import h11
import trio

from .. import _codes as codes
from .._errors import RemoteProtocolError
from ..protocol import (
    JSON,
    ErrorBody,
    InvocationResult,
    InvokeFunction,
    Message,
    loads,
    new_uuid,
)
from ._config import EngineConfig

logger = logging.getLogger("iii_trio.engine.http")

#: The reserved worker id of the HTTP function caller.
HTTP_FUNCTIONS_WORKER: Final = "engine:http-functions"
METHODS: Final = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
#: Largest answer read from a function's URL, in bytes.
MAX_ANSWER: Final = 16 * 1024 * 1024
HTTP_REQUEST_FAILED: Final = "http_request_failed"
HTTP_ERROR: Final = "http_error"
INVALID_RESPONSE: Final = "invalid_response"


class InvokeError(Exception):
    """A call to a URL failed: ``code`` and message for the caller."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@final
@attrs.frozen(kw_only=True)
class Target:
    """A checked ``invocation`` config."""

    secure: bool
    host: str
    port: int
    resource: str
    method: str
    headers: tuple[tuple[str, str], ...]
    auth: JSON
    timeout: float


def _blocked(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global or address.is_multicast


def parse_target(invocation: JSON, config: EngineConfig) -> Target:
    """Check an ``invocation`` config (the parts that need no name resolution).

    Raises:
        InvokeError: why it cannot be called.
    """
    if not isinstance(invocation, dict) or not isinstance(invocation.get("url"), str):
        raise InvokeError(HTTP_REQUEST_FAILED, "invocation needs a 'url'")
    url = str(invocation["url"])
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http"):
        raise InvokeError(HTTP_REQUEST_FAILED, f"unsupported URL scheme {parts.scheme!r}")
    if parts.scheme == "http" and not config.http_functions_allow_http:
        raise InvokeError(HTTP_REQUEST_FAILED, "only https URLs are allowed")
    if not parts.hostname or parts.username or parts.password:
        raise InvokeError(HTTP_REQUEST_FAILED, "the URL needs a host and no credentials")
    host = parts.hostname
    if not config.http_functions_allow_private:
        if host.lower() == "localhost" or host.lower().endswith(".localhost"):
            raise InvokeError(HTTP_REQUEST_FAILED, f"{host} is not a public address")
        try:
            if _blocked(ipaddress.ip_address(host)):
                raise InvokeError(HTTP_REQUEST_FAILED, f"{host} is not a public address")
        except ValueError:
            pass  # a name: checked once resolved, at each call
    method = str(invocation.get("method") or "POST").upper()
    if method not in METHODS:
        raise InvokeError(HTTP_REQUEST_FAILED, f"unsupported method {method!r}")
    raw_headers = invocation.get("headers") or {}
    if not isinstance(raw_headers, dict) or not all(
        isinstance(v, str) for v in raw_headers.values()
    ):
        raise InvokeError(HTTP_REQUEST_FAILED, "'headers' must map names to strings")
    timeout_ms = invocation.get("timeout_ms")
    timeout = config.http_functions_timeout
    if isinstance(timeout_ms, int) and not isinstance(timeout_ms, bool) and timeout_ms > 0:
        timeout = timeout_ms / 1000
    auth = invocation.get("auth")
    _auth_headers(auth, b"", "0")  # a missing secret fails here, at registration
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(
        secure=parts.scheme == "https",
        host=host,
        port=parts.port or (443 if parts.scheme == "https" else 80),
        resource=resource,
        method=method,
        headers=tuple((str(k), str(v)) for k, v in raw_headers.items()),
        auth=auth,
        timeout=timeout,
    )


def _secret(auth: dict[str, JSON], key: str) -> str:
    name = auth.get(key)
    if not isinstance(name, str) or not name:
        raise InvokeError(HTTP_REQUEST_FAILED, f"auth needs '{key}' (an environment variable)")
    value = os.environ.get(name)
    if value is None:
        raise InvokeError(HTTP_REQUEST_FAILED, f"environment variable {name} is not set")
    return value


def _auth_headers(auth: JSON, body: bytes, timestamp: str) -> list[tuple[str, str]]:
    """The auth header of a call (secrets from the environment, by the names in ``auth``)."""
    if auth is None:
        return []
    if not isinstance(auth, dict):
        raise InvokeError(HTTP_REQUEST_FAILED, "'auth' must be an object")
    kind = auth.get("type")
    if kind == "bearer":
        return [("Authorization", f"Bearer {_secret(auth, 'token_key')}")]
    if kind == "api_key":
        header = auth.get("header")
        if not isinstance(header, str) or not header:
            raise InvokeError(HTTP_REQUEST_FAILED, "api_key auth needs a 'header'")
        return [(header, _secret(auth, "value_key"))]
    if kind == "hmac":
        secret = _secret(auth, "secret_key")
        signed = f"{timestamp}:{base64.b64encode(body).decode('ascii')}".encode()
        digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        return [("x-iii-Signature", f"sha256={digest}")]
    raise InvokeError(HTTP_REQUEST_FAILED, f"unsupported auth type {kind!r}")


def build_request(target: Target, function_id: str, data: JSON) -> tuple[h11.Request, bytes]:
    body = json.dumps(data, separators=(",", ":")).encode("utf-8")
    timestamp = str(int(time.time()))
    host = target.host if ":" not in target.host else f"[{target.host}]"
    default_port = 443 if target.secure else 80
    headers = [
        ("Host", host if target.port == default_port else f"{host}:{target.port}"),
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
        ("x-iii-Function-Path", function_id),
        ("x-iii-Invocation-ID", new_uuid()),
        ("x-iii-Timestamp", timestamp),
        *target.headers,
        *_auth_headers(target.auth, body, timestamp),
    ]
    return h11.Request(method=target.method, target=target.resource, headers=headers), body


def interpret(status: int, reason: bytes, body: bytes) -> JSON:
    """A URL's answer as a result.

    Raises:
        InvokeError: an error status (with the body's error when it has one), or a 2xx
            body that is not JSON.
    """
    parsed: JSON = None
    valid = True
    if body.strip():
        try:
            parsed = loads(body)
        except RemoteProtocolError:
            valid = False
    if status >= 400:
        error = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            code = error.get("code")
            raise InvokeError(code if isinstance(code, str) else HTTP_ERROR, str(error["message"]))
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = reason.decode("latin-1")
        raise InvokeError(HTTP_ERROR, f"HTTP {status} {phrase}".rstrip())
    if not valid:
        if 200 <= status < 300:
            raise InvokeError(INVALID_RESPONSE, "the function's URL answered with invalid JSON")
        return None
    return parsed


async def _connect(target: Target, config: EngineConfig) -> trio.abc.Stream:
    """Resolve, check every address, connect to a checked one (TLS for https)."""
    try:
        infos = await trio.socket.getaddrinfo(
            target.host, target.port, type=trio.socket.SOCK_STREAM
        )
    except OSError as exc:
        raise InvokeError(HTTP_REQUEST_FAILED, f"cannot resolve {target.host}: {exc}") from None
    addresses = [str(info[4][0]) for info in infos]
    if not config.http_functions_allow_private:
        for address in addresses:
            if _blocked(ipaddress.ip_address(address.split("%", 1)[0])):
                raise InvokeError(
                    HTTP_REQUEST_FAILED, f"{target.host} resolves to a non-public address"
                )
    stream: trio.abc.Stream
    try:
        stream = await trio.open_tcp_stream(addresses[0], target.port)
    except OSError as exc:
        raise InvokeError(HTTP_REQUEST_FAILED, f"cannot connect to {target.host}: {exc}") from None
    if target.secure:
        context = ssl.create_default_context()
        stream = trio.SSLStream(stream, context, server_hostname=target.host)
    return stream


async def call_url(target: Target, config: EngineConfig, function_id: str, data: JSON) -> JSON:
    """Call ``target`` with ``data``; its result.

    Raises:
        InvokeError: the call failed (see :func:`interpret`).
    """
    request, body = build_request(target, function_id, data)
    conn = h11.Connection(h11.CLIENT)
    try:
        with trio.fail_after(target.timeout):
            stream = await _connect(target, config)
            async with stream:
                await stream.send_all(
                    conn.send(request)
                    + conn.send(h11.Data(data=body))
                    + conn.send(h11.EndOfMessage())
                )
                response: h11.Response | None = None
                answer = bytearray()
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(bytes(await stream.receive_some(65536)))
                    elif isinstance(event, h11.Response):
                        response = event
                    elif isinstance(event, h11.Data):
                        answer += event.data
                        if len(answer) > MAX_ANSWER:
                            raise InvokeError(HTTP_REQUEST_FAILED, "answer over 16 MiB")
                    elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                        break
    except trio.TooSlowError:
        raise InvokeError(
            HTTP_REQUEST_FAILED, f"no answer from {target.host} within {target.timeout:g}s"
        ) from None
    except (OSError, trio.BrokenResourceError, h11.ProtocolError) as exc:
        raise InvokeError(HTTP_REQUEST_FAILED, f"request to {target.host} failed: {exc}") from None
    if response is None:
        raise InvokeError(HTTP_REQUEST_FAILED, f"{target.host} closed without an answer")
    return interpret(response.status_code, response.reason, bytes(answer))


@final
class HttpInvoker:
    """Runs calls to HTTP-invoked functions (see the module docstring).

    Args:
        config: the engine's settings (the URL policy and the default timeout).
        submit: hands an answer from :data:`HTTP_FUNCTIONS_WORKER` to the router.
        lookup: the ``invocation`` config of a function, by namespace and id.
    """

    def __init__(
        self,
        config: EngineConfig,
        submit: Callable[[Message], None],
        lookup: Callable[[str, str], JSON],
    ) -> None:
        self.config = config
        self._submit = submit
        self.lookup = lookup
        self._nursery: trio.Nursery | None = None

    def check(self, invocation: JSON) -> str | None:
        """Why a registration's ``invocation`` cannot be called, or ``None``."""
        try:
            parse_target(invocation, self.config)
        except InvokeError as exc:
            return str(exc)
        return None

    async def run(self) -> None:
        """Own the calls' tasks until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    def deliver(self, msg: Message) -> None:
        """What the router sent the caller: calls to run. Never waits."""
        if not isinstance(msg, InvokeFunction) or msg.invocation_id is None:
            return
        if self._nursery is None:
            self._answer(msg, error=ErrorBody(code=HTTP_REQUEST_FAILED, message="not running"))
            return
        self._nursery.start_soon(self._call, msg)

    async def _call(self, msg: InvokeFunction) -> None:
        invocation = self.lookup(msg.namespace or "default", msg.function_id)
        if invocation is None:
            message = f"Function '{msg.function_id}' not found"
            self._answer(msg, error=ErrorBody(code=codes.FUNCTION_NOT_FOUND, message=message))
            return
        try:
            target = parse_target(invocation, self.config)
            result = await call_url(target, self.config, msg.function_id, msg.data)
        except InvokeError as exc:
            logger.info("HTTP function %s failed: %s: %s", msg.function_id, exc.code, exc)
            self._answer(msg, error=ErrorBody(code=exc.code, message=str(exc)))
        else:
            self._answer(msg, result=result)

    def _answer(
        self, msg: InvokeFunction, *, result: JSON = None, error: ErrorBody | None = None
    ) -> None:
        assert msg.invocation_id is not None
        self._submit(
            InvocationResult(
                invocation_id=msg.invocation_id,
                function_id=msg.function_id,
                result=result,
                error=error,
            )
        )
