"""HTTP that is not a WebSocket upgrade, against a real engine on 127.0.0.1 (issue 14,
"Hostile input, round 2"): every such request gets a complete HTTP answer and one INFO line
without a traceback, and no log line ever shows a token, a channel key or credentials."""

from __future__ import annotations

import base64
import logging
import os

import pytest
import trio

import iii_trio
from iii_trio._ws._handshake import MAX_REQUEST_HEAD

LIMIT = 10  # seconds: the hard cap of every exchange


async def _ask(port: int, request: bytes, *, half_close: bool = True) -> bytes:
    """Send ``request`` and read the answer until the engine closes the connection."""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(request)
        if half_close:
            await stream.send_eof()
        answer = b""
        try:
            while chunk := await stream.receive_some():
                answer += chunk
        except trio.BrokenResourceError:
            pass  # a reset after the answer (a test of ours would then fail on its content)
        return answer


def _split(answer: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def _upgrade(target: str = "/", *, method: str = "GET", version: str = "1.1") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"{method} {target} HTTP/{version}\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def _assert_quiet(caplog: pytest.LogCaptureFixture) -> None:
    """Refusals are INFO lines: no warning or error, no traceback."""
    for record in caplog.records:
        assert record.exc_info is None, record.getMessage()
        if record.name == "iii_trio.ws":
            assert record.levelno <= logging.INFO, record.getMessage()


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("HEAD", b""),
        ("POST", b'{"x": 1}'),
        ("POST", b"x" * (1024 * 1024)),  # unread when the answer goes out
        ("PUT", b""),
        ("OPTIONS", b""),
        ("DELETE", b""),
        ("PATCH", b"{}"),
    ],
    ids=["HEAD", "POST", "POST-1MiB", "PUT", "OPTIONS", "DELETE", "PATCH"],
)
async def test_other_methods_get_405(caplog, method: str, body: bytes) -> None:
    caplog.set_level(logging.INFO)
    request = _upgrade(method=method).replace(
        b"\r\n\r\n", f"\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    )
    async with iii_trio.open_engine(port=0) as engine:
        with trio.fail_after(LIMIT):
            answer = await _ask(engine.port, request + body)
    status, headers, answer_body = _split(answer)
    assert status == "HTTP/1.1 405 Method Not Allowed", answer[:200]
    assert headers["allow"] == "GET"
    assert headers["connection"] == "close"
    if method == "HEAD":
        assert answer_body == b""  # a HEAD answer has no body, whatever Content-Length says
    else:
        assert answer_body == b"only GET can open a WebSocket\n"
        assert headers["content-length"] == str(len(answer_body))
    assert f"refused {method} / from 127.0.0.1:" in caplog.text
    _assert_quiet(caplog)


@pytest.mark.parametrize(
    "request_bytes",
    [_upgrade(version="1.0"), b"GET / HTTP/1.0\r\n\r\n"],
    ids=["upgrade", "plain"],
)
async def test_http_1_0_gets_400(caplog, request_bytes: bytes) -> None:
    caplog.set_level(logging.INFO)
    async with iii_trio.open_engine(port=0) as engine:
        with trio.fail_after(LIMIT):
            answer = await _ask(engine.port, request_bytes)
    status, _, body = _split(answer)
    assert status == "HTTP/1.1 400 Bad Request", answer[:200]
    assert body == b"a WebSocket upgrade needs HTTP/1.1\n"
    assert engine.statistics().workers == 0
    _assert_quiet(caplog)


async def test_plain_get_gets_426_with_upgrade(caplog) -> None:
    caplog.set_level(logging.INFO)
    async with iii_trio.open_engine(port=0) as engine:
        with trio.fail_after(LIMIT):
            answer = await _ask(engine.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, _ = _split(answer)
    assert status == "HTTP/1.1 426 Upgrade Required"
    assert headers["upgrade"] == "websocket"  # RFC 9110: a 426 names the protocol
    assert headers["sec-websocket-version"] == "13"
    _assert_quiet(caplog)


@pytest.mark.parametrize("excess", [0, 1])
async def test_request_head_limit_on_the_engine(excess: int) -> None:
    base = _upgrade().replace(b"\r\n\r\n", b"\r\nX-Pad: \r\n\r\n")
    request = base.replace(b"X-Pad: ", b"X-Pad: " + b"a" * (MAX_REQUEST_HEAD + excess - len(base)))
    assert len(request) == MAX_REQUEST_HEAD + excess
    async with iii_trio.open_engine(port=0) as engine:
        with trio.fail_after(LIMIT):
            answer = await _ask(engine.port, request)
    status, _, body = _split(answer)
    if excess:
        assert status == "HTTP/1.1 431 Request Header Fields Too Large", answer[:200]
        assert body == b"request head too large\n"
    else:
        assert status.startswith("HTTP/1.1 101 "), answer[:200]


TOKEN = "tok-4f9a-very-secret"
KEY = "key-77c1-very-secret"
BEARER = "bearer-0d2e-very-secret"
SECRETS = (TOKEN, KEY, BEARER)


async def test_secrets_in_bad_requests_never_reach_the_logs(caplog) -> None:
    """Requests that carry a secret and fail at every step of the handshake."""
    caplog.set_level(logging.DEBUG)
    channel_path = "/ws/channels/00000000-0000-4000-8000-000000000000"
    cases: list[tuple[bytes, str]] = [
        # the request line or a header line does not parse (h11 quotes the line)
        (f"GET /?token={TOKEN} HTTP/1.1 extra\r\nHost: x\r\n\r\n".encode(), "400"),
        (f"GET {channel_path}?key={KEY}\x01&dir=read HTTP/1.1\r\n\r\n".encode(), "400"),
        (f"GET /?tok%65n={TOKEN} HTTP/1.1 x\r\n\r\n".encode(), "400"),
        (
            f"GET / HTTP/1.1\r\nHost: x\r\nAuthorization Bearer {BEARER}\r\n\r\n".encode(),
            "400",
        ),
        (f"GET / HTTP/1.1\r\nHost: x\r\nauthorization : Bearer {BEARER}\r\n\r\n".encode(), "400"),
        # parses, but is not an upgrade (405, 426, 400)
        (f"POST /?token={TOKEN} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode(), "405"),
        (f"HEAD {channel_path}?key={KEY}&dir=write HTTP/1.1\r\nHost: x\r\n\r\n".encode(), "405"),
        (f"GET /?token={TOKEN} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), "426"),
        (_upgrade(f"/?token={TOKEN}", version="1.0"), "400"),
        # an upgrade the engine refuses: wrong token (401), unknown path (404), unknown
        # channel (404); the right token in the query must not be logged either
        (_upgrade(f"/?token={TOKEN}x"), "401"),
        (_upgrade(f"/nowhere?token={TOKEN}"), "404"),
        (_upgrade(f"{channel_path}?token={TOKEN}&key={KEY}&dir=read"), "404"),
        # too long a head
        (f"GET /?token={TOKEN}&x={'a' * MAX_REQUEST_HEAD} HTTP/1.1\r\n\r\n".encode(), "431"),
    ]
    async with iii_trio.open_engine(port=0, token=TOKEN, handshake_timeout=0.3) as engine:
        with trio.fail_after(LIMIT):
            for request, status in cases:
                answer = await _ask(engine.port, request)
                assert answer.startswith(f"HTTP/1.1 {status} ".encode()), (request, answer[:200])
                for secret in SECRETS:
                    assert secret.encode() not in answer  # not even echoed to the peer
            # Half a request, then silence: the handshake times out.
            partial = f"GET /?token={TOKEN}&key={KEY} HTTP/1.1\r\nAuthorization: Bea".encode()
            assert await _ask(engine.port, partial, half_close=False) == b""
    text = caplog.text
    for logged in (
        "bad HTTP request from",  # the lines h11 could not parse
        "refused POST /?token=<redacted> from",
        "refused HEAD /ws/channels/",
        "missing or wrong token",  # the engine's line for the 401
        "handshake from",  # ... timed out
    ):
        assert logged in text, logged
    for secret in SECRETS:
        assert secret not in text
        assert secret[:12] not in text  # no part of one either
    _assert_quiet(caplog)
