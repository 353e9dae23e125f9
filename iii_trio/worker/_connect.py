"""The worker's connection to the engine: where transport errors become public ones.

``iii_trio._ws`` reports a failed connection as ``OSError``, ``trio.TooSlowError``,
``trio.BrokenResourceError`` or its private ``HandshakeError``; :func:`connect_engine`
translates them, once, into the :class:`~iii_trio.ConnectError` tree (G5). Channel sockets
keep their own mapping (``ChannelRefused``) but take the 401 wording from here
(:func:`channel_refusal_reason`).
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Sequence
from typing import Final
from urllib.parse import parse_qs, urlsplit

import trio

from .._errors import ConnectError, EngineUnreachable, HandshakeRefused, Unauthorized
from .._ws import Dialer, HandshakeError, MessageSocket, connect_message_socket
from .._ws._handshake import parse_ws_url

#: Reconnect backoff: first delay and cap, in seconds (iii's: 1 s doubling to 30 s, ±30 %).
RECONNECT_DELAY: Final = 1.0
RECONNECT_MAX_DELAY: Final = 30.0

_SECRET_PARAM = re.compile(r"((?:^|[?&])(?:token|key)=)[^&#]*")


def check_engine_url(url: str) -> None:
    """Raise ``ValueError`` with a helpful message unless ``url`` is a ws:// or wss:// URL
    with a host (and a valid port)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        suggestion = ("wss" if scheme == "https" else "ws") + url[len(scheme) :]
        raise ValueError(
            f"engine URLs are WebSocket URLs: use {redact_url(suggestion)!r}, "
            f"not {redact_url(url)!r}"
        )
    problem = ""
    if scheme not in ("ws", "wss"):
        problem = "expected ws://HOST:PORT or wss://HOST:PORT"
    else:
        try:
            has_port = parts.port is not None or not parts.netloc.endswith(":")
        except ValueError:  # urllib checks the port only when asked for it
            has_port = False
        if not has_port:
            problem = "the port is not a number from 0 to 65535"
        elif not parts.hostname:
            problem = "it has no host"
    if not problem:
        try:
            parse_ws_url(url)
        except ValueError as exc:
            problem = str(exc)
    if problem:
        raise ValueError(f"not an engine URL: {redact_url(url)!r}: {problem}")


def redact_url(url: str) -> str:
    """``url`` with the values of ``token`` and ``key`` query parameters replaced by ``***``."""
    return _SECRET_PARAM.sub(r"\1***", url)


def token_sent(url: str, headers: Sequence[tuple[str, str]]) -> bool:
    """Whether a connection to ``url`` with ``headers`` presents a token to the engine."""
    if any(name.lower() == "authorization" for name, _ in headers):
        return True
    return "token" in parse_qs(urlsplit(url).query, keep_blank_values=True)


def refusal(exc: HandshakeError, url: str, *, sent_token: bool) -> ConnectError:
    """The public error for a refused or failed opening handshake (not yet raised)."""
    where = redact_url(url)
    if exc.status == 401:
        return Unauthorized(url=where, token_sent=sent_token, body=exc.body)
    if exc.status == 0:  # no HTTP answer at all: lost, not HTTP, or closed without a word
        detail = str(exc) if exc.__cause__ is not None else "the server closed the connection"
        return EngineUnreachable(f"cannot reach the engine at {where}: {detail}", url=where)
    if exc.status == 101:  # it upgraded, but not as RFC 6455 says
        message = f"the server at {where} is not a WebSocket server: {exc}"
    else:
        answer = f"HTTP {exc.status} {exc.body}".rstrip()
        message = f"the server at {where} refused the WebSocket upgrade: {answer}"
    return HandshakeRefused(message, url=where, status=exc.status, body=exc.body)


def channel_refusal_reason(
    exc: HandshakeError, url: str, headers: Sequence[tuple[str, str]]
) -> str:
    """Why a channel socket of the engine at ``url`` was refused: the handshake's own words,
    except that a 401 says whether the token was missing or rejected (as
    :class:`Unauthorized` does)."""
    if exc.status != 401:
        return str(exc)
    return str(Unauthorized(url=redact_url(url), token_sent=token_sent(url, headers)))


async def connect_engine(
    url: str,
    *,
    headers: Sequence[tuple[str, str]],
    max_message_size: int,
    dialer: Dialer | None,
    connect_timeout: float,
) -> MessageSocket:
    """Open the worker's message socket to the engine at ``url``.

    Raises:
        ValueError: ``url`` is not a ws:// or wss:// URL (an http:// one is told to use ws://).
        Unauthorized: the engine answered 401 (``token_sent`` says missing or rejected).
        HandshakeRefused: a server answered with another HTTP status instead of upgrading.
        EngineUnreachable: TCP or DNS failed, the connection was lost during the handshake,
            or no upgrade came within ``connect_timeout``.
    """
    check_engine_url(url)
    try:
        return await connect_message_socket(
            url,
            headers=headers,
            max_message_size=max_message_size,
            dialer=dialer,
            connect_timeout=connect_timeout,
        )
    except HandshakeError as exc:
        raise refusal(exc, url, sent_token=token_sent(url, headers)) from exc
    except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
        where = redact_url(url)
        raise EngineUnreachable(
            f"cannot reach the engine at {where}: {_reason(exc)}", url=where
        ) from exc


def _reason(exc: BaseException) -> str:
    """``str(exc)``, plus the system's reasons when trio folded several attempts into one
    ``OSError`` ("all attempts to connect ... failed")."""
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup):
        reasons = sorted(
            {
                os.strerror(e.errno).lower()
                for e in cause.exceptions
                if isinstance(e, OSError) and e.errno
            }
        )
        if reasons:
            text = f"{', '.join(reasons)} ({text})"
    return text


def backoff(attempt: int) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0-based), with jitter."""
    delay: float = min(RECONNECT_DELAY * 2.0**attempt, RECONNECT_MAX_DELAY)
    return delay * random.uniform(0.7, 1.3)
