"""Our WebSocket layer against trio-websocket (wsproto), an independent RFC 6455 implementation.

Real sockets on 127.0.0.1, port 0. Our server (``handle_connection`` under ``trio.serve_tcp``)
talks to trio-websocket clients, our client (``connect_websocket``) talks to a trio-websocket
server, and raw TCP peers cover what a well-behaved library never sends (plain HTTP, garbage,
half a request, a dropped connection). Every test runs under ``trio.fail_after``.
"""

from __future__ import annotations

import base64
import os
from contextlib import asynccontextmanager, suppress
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs
import pytest
import trio
import trio.testing
import trio_websocket

from iii_trio._ws import (
    Accept,
    ConnectionClosed,
    HandshakeError,
    HandshakeRequest,
    MessageSocket,
    Reject,
    WebSocket,
    connect_websocket,
    handle_connection,
)
from iii_trio._ws._connection import FAIL_LINGER
from iii_trio._ws._frames import Opcode, encode_frame, frame_header
from iii_trio._ws._handshake import accept_key

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

MiB = 1024 * 1024
LIMIT = 10  # seconds: the hard cap of every test
BIG_LIMIT = 8 * MiB
SMALL_LIMIT = 1 * MiB
SIZES = [0, 1, 125, 126, 65535, 65536, 1 * MiB, 5 * MiB]


# --- our server, with a small router --------------------------------------------------------


@attrs.define
class Recorder:
    """What the server-side handlers saw."""

    done: trio.Event = attrs.field(factory=trio.Event)
    error: BaseException | None = None
    after_close: BaseException | None = None
    received: list[str | bytes] = attrs.field(factory=list)
    accepted: list[HandshakeRequest] = attrs.field(factory=list)

    def finish(self, error: BaseException | None) -> None:
        self.error = error
        self.done.set()


@attrs.define
class Server:
    port: int
    recorder: Recorder

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"


def make_router(rec: Recorder) -> Callable[[HandshakeRequest, str], Accept | Reject]:
    async def echo(ws: MessageSocket) -> None:
        try:
            while True:
                await ws.send(await ws.receive())
        except ConnectionClosed as exc:
            rec.finish(exc)

    async def record(ws: MessageSocket) -> None:
        try:
            while True:
                rec.received.append(await ws.receive())
        except ConnectionClosed as exc:
            rec.finish(exc)

    async def close_4001(ws: MessageSocket) -> None:
        rec.received.append(await ws.receive())
        await ws.close(4001, "why")
        try:
            await ws.receive()
        except trio.ClosedResourceError as exc:
            rec.after_close = exc
        rec.finish(None)

    async def crash(ws: MessageSocket) -> None:
        await ws.receive()
        raise RuntimeError("handler bug")

    def router(request: HandshakeRequest, peer: str) -> Accept | Reject:
        assert peer.startswith("127.0.0.1:")
        rec.accepted.append(request)
        routes: dict[str, Callable[[MessageSocket], Awaitable[None]]] = {
            "/echo": echo,
            "/record": record,
            "/close4001": close_4001,
            "/crash": crash,
        }
        if request.path == "/small":
            return Accept(echo, max_message_size=SMALL_LIMIT)
        if request.path in routes:
            return Accept(routes[request.path], max_message_size=BIG_LIMIT)
        if request.path == "/busy":
            return Reject(409, "taken\n", [("X-Why", "busy")])
        return Reject(404, "no such route\n")

    return router


async def start_server(nursery: trio.Nursery, *, handshake_timeout: float = 10.0) -> Server:
    rec = Recorder()
    router = make_router(rec)

    async def handler(stream: trio.SocketStream) -> None:
        await handle_connection(stream, router, handshake_timeout=handshake_timeout)

    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    return Server(port=listeners[0].socket.getsockname()[1], recorder=rec)


@pytest.fixture
async def server(nursery: trio.Nursery) -> Server:
    return await start_server(nursery)


# trio-websocket 0.12.2 never closes a *client* socket when the server rejects the upgrade
# or starts the close handshake (its reader task stops without closing the stream, and
# aclose() returns early), even against its own server. The unclosed socket's
# ResourceWarning would fail some later test, so we open the TCP stream ourselves, hand it
# to ``wrap_client_stream`` and always close it.


@asynccontextmanager
async def tw_client(url: str, **kwargs: Any) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """A trio-websocket client connection (closed with 1000 on exit if still open)."""
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    resource = parts.path + (f"?{parts.query}" if parts.query else "")
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    try:
        async with trio.open_nursery() as nursery:
            ws = await trio_websocket.wrap_client_stream(
                nursery,
                stream,
                f"{parts.hostname}:{parts.port}",
                resource,
                max_message_size=BIG_LIMIT,
                receive_buffer_size=None,
                **kwargs,
            )
            try:
                yield ws
            finally:
                await ws.aclose()
    finally:
        await trio.aclose_forcefully(stream)


async def tw_rejection(url: str) -> trio_websocket.ConnectionRejected:
    """Connect with trio-websocket, expecting the server to refuse the upgrade."""
    with pytest.RaisesGroup(trio_websocket.ConnectionRejected) as info:
        async with tw_client(url):
            pytest.fail("the upgrade should have been refused")  # pragma: no cover
    (exc,) = info.value.exceptions
    assert isinstance(exc, trio_websocket.ConnectionRejected)
    return exc


def _payload(size: int, text: bool) -> str | bytes:
    if text:
        # Multi-byte characters, so the UTF-8 check and the length limit both matter.
        unit = "aé€🎉"  # 1 + 2 + 3 + 4 bytes
        return (unit * (size // 10 + 1)).encode()[:size].decode("utf-8", "ignore")
    return os.urandom(size)


# --- raw TCP helpers -------------------------------------------------------------------------


def upgrade_request(path: str = "/echo", *, key: str | None = None, extra: str = "") -> bytes:
    key = key or base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode()


async def read_head(stream: trio.abc.ReceiveStream) -> tuple[bytes, bytes]:
    """An HTTP head and whatever came after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some()
        if not chunk:
            return data, b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


async def read_all(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    try:
        while chunk := await stream.receive_some():
            data += chunk
    except trio.BrokenResourceError:
        pass  # a reset after the answer
    return data


async def raw_connect(server: Server) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", server.port)


async def raw_upgrade(server: Server, path: str) -> tuple[trio.SocketStream, bytes]:
    stream = await raw_connect(server)
    key = base64.b64encode(os.urandom(16)).decode()
    await stream.send_all(upgrade_request(path, key=key))
    head, rest = await read_head(stream)
    assert head.startswith(b"HTTP/1.1 101 "), head
    assert f"\r\nSec-WebSocket-Accept: {accept_key(key)}".encode() in head
    return stream, rest


# --- our server, trio-websocket client: data ---------------------------------------------------


@pytest.mark.parametrize("text", [True, False], ids=["text", "binary"])
async def test_echo_sizes(server: Server, text: bool) -> None:
    with trio.fail_after(LIMIT):
        async with tw_client(server.url("/echo")) as ws:
            for size in SIZES:
                message = _payload(size, text)
                await ws.send_message(message)
                echoed = await ws.get_message()
                assert type(echoed) is type(message)
                assert echoed == message, size
        await server.recorder.done.wait()
    assert isinstance(server.recorder.error, ConnectionClosed)
    assert server.recorder.error.code == 1000


async def test_many_small_messages(server: Server) -> None:
    count = 1000
    with trio.fail_after(LIMIT):
        async with tw_client(server.url("/echo"), message_queue_size=8) as ws:

            async def sender() -> None:
                for i in range(count):
                    await ws.send_message(f"m{i}" if i % 2 else f"m{i}".encode())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender)
                for i in range(count):
                    assert await ws.get_message() == (f"m{i}" if i % 2 else f"m{i}".encode())


async def test_ping_is_answered(server: Server) -> None:
    with trio.fail_after(LIMIT):
        async with tw_client(server.url("/echo")) as ws:
            await ws.ping(b"abc")
            await ws.ping(b"x" * 125)
            await ws.ping(b"")
            await ws.send_message("still fine")
            assert await ws.get_message() == "still fine"
            async with trio.open_nursery() as nursery:
                for i in range(20):
                    nursery.start_soon(ws.ping, f"p{i}".encode())


async def test_query_and_headers_reach_the_router(server: Server) -> None:
    with trio.fail_after(LIMIT):
        async with tw_client(
            server.url("/echo?channel=abc&dir=read"), extra_headers=[(b"X-Token", b"t0k")]
        ) as ws:
            await ws.send_message("x")
            assert await ws.get_message() == "x"
    (request,) = server.recorder.accepted
    assert request.path == "/echo"
    assert request.query == {"channel": "abc", "dir": "read"}
    assert request.headers["x-token"] == "t0k"


# --- our server, trio-websocket client: closing -------------------------------------------------


async def test_server_closes_with_code(server: Server) -> None:
    with trio.fail_after(LIMIT):
        async with tw_client(server.url("/close4001")) as ws:
            await ws.send_message("hi")
            with pytest.raises(trio_websocket.ConnectionClosed) as info:
                await ws.get_message()
            assert info.value.reason is not None
            assert info.value.reason.code == 4001
            assert info.value.reason.reason == "why"
        await server.recorder.done.wait()
    assert server.recorder.received == ["hi"]
    # After our own close, receive says *we* closed it.
    assert isinstance(server.recorder.after_close, trio.ClosedResourceError)
    assert not isinstance(server.recorder.after_close, trio.BrokenResourceError)


async def test_client_closes_with_code(server: Server) -> None:
    with trio.fail_after(LIMIT):
        async with tw_client(server.url("/record")) as ws:
            await ws.send_message(b"one")
            await ws.aclose(4003, "bye now")
        await server.recorder.done.wait()
    err = server.recorder.error
    assert isinstance(err, ConnectionClosed)
    assert isinstance(err, trio.BrokenResourceError)
    assert (err.code, err.reason) == (4003, "bye now")
    assert server.recorder.received == [b"one"]


async def test_client_closes_without_reason(server: Server) -> None:
    with trio.fail_after(LIMIT):
        async with tw_client(server.url("/record")) as ws:
            await ws.aclose(1000)
            assert ws.closed is not None
            assert ws.closed.code == 1000
        await server.recorder.done.wait()
    err = server.recorder.error
    assert isinstance(err, ConnectionClosed)
    assert (err.code, err.reason) == (1000, "")


async def test_message_too_big_closes_1009(server: Server) -> None:
    with trio.fail_after(LIMIT):
        async with tw_client(server.url("/small")) as ws:
            await ws.send_message(b"x" * SMALL_LIMIT)  # exactly at the limit: fine
            assert len(await ws.get_message()) == SMALL_LIMIT
            await ws.send_message(b"x" * (SMALL_LIMIT + 1))
            with pytest.raises(trio_websocket.ConnectionClosed) as info:
                await ws.get_message()
            assert info.value.reason is not None
            assert info.value.reason.code == 1009
            # trio-websocket, as a client, waits for the server's TCP close after the close
            # handshake (leaving tw_client waits for its reader task): the server must
            # half-close instead of making it sit out the linger time.
            exit_deadline = trio.current_time() + FAIL_LINGER / 2
        assert trio.current_time() < exit_deadline
        await server.recorder.done.wait()
    err = server.recorder.error
    assert isinstance(err, ConnectionClosed)
    assert err.code == 1009


async def test_handler_crash_closes_1011(server: Server) -> None:
    with trio.fail_after(LIMIT):
        async with tw_client(server.url("/crash")) as ws:
            await ws.send_message("boom")
            with pytest.raises(trio_websocket.ConnectionClosed) as info:
                await ws.get_message()
            assert info.value.reason is not None
            assert info.value.reason.code == 1011
        # The server survives it.
        async with tw_client(server.url("/echo")) as ws:
            await ws.send_message("ok")
            assert await ws.get_message() == "ok"


# --- our server: rejects before the upgrade ---------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status", "body"), [("/busy", 409, b"taken\n"), ("/nope", 404, b"no such route\n")]
)
async def test_router_rejects(server: Server, path: str, status: int, body: bytes) -> None:
    with trio.fail_after(LIMIT):
        rejected = await tw_rejection(server.url(path))
    assert rejected.status_code == status
    assert rejected.body == body
    if status == 409:
        assert (b"x-why", b"busy") in [(k.lower(), v) for k, v in rejected.headers]
    assert server.recorder.accepted[0].path == path


async def test_plain_http_get_gets_426(server: Server) -> None:
    with trio.fail_after(LIMIT):
        stream = await raw_connect(server)
        async with stream:
            await stream.send_all(b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = await read_all(stream)
    assert answer.startswith(b"HTTP/1.1 426 "), answer
    assert b"sec-websocket-version: 13" in answer.lower()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (upgrade_request(extra="").replace(b"GET", b"POST", 1), 405),
        (upgrade_request().replace(b"Version: 13", b"Version: 8"), 426),
        (upgrade_request(key="not base64!!"), 400),
        (upgrade_request(key=base64.b64encode(b"short").decode()), 400),
        (upgrade_request().replace(b"Upgrade: websocket\r\n", b""), 426),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
    ],
    ids=["post", "version", "bad-key", "short-key", "no-upgrade", "no-host"],
)
async def test_bad_requests_get_http_errors(
    server: Server, request_bytes: bytes, status: int
) -> None:
    with trio.fail_after(LIMIT):
        stream = await raw_connect(server)
        async with stream:
            # The server may answer and close before reading all of it.
            with suppress(trio.BrokenResourceError):
                await stream.send_all(request_bytes)
            answer = await read_all(stream)
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]
    assert server.recorder.accepted == []


@pytest.mark.parametrize(
    "extra",
    [
        "",
        "Origin: http://example.com\r\n",
        "Sec-WebSocket-Protocol: chat\r\n",
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
    ],
)
async def test_browser_style_requests_upgrade(server: Server, extra: str) -> None:
    """Header spellings real clients use: token lists, other case, offered extensions."""
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        "GET /echo?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: WebSocket\r\n"
        "Connection: keep-alive, Upgrade\r\nsec-websocket-key: " + key + "\r\n"
        "Sec-WebSocket-Version:  13 \r\n" + extra + "\r\n"
    ).encode()
    with trio.fail_after(LIMIT):
        stream = await raw_connect(server)
        async with stream:
            await stream.send_all(request)
            head, rest = await read_head(stream)
            assert head.startswith(b"HTTP/1.1 101 "), head
            assert accept_key(key).encode() in head
            # We negotiate neither subprotocols nor extensions.
            assert b"sec-websocket-extensions" not in head.lower()
            assert b"sec-websocket-protocol" not in head.lower()
            for part in encode_frame(Opcode.TEXT, b"hi", mask=True):
                await stream.send_all(bytes(part))
            data = rest
            while len(data) < 4:
                data += await stream.receive_some()
            assert data == frame_header(Opcode.TEXT, 2) + b"hi"


async def test_huge_request_head_is_refused(server: Server) -> None:
    # A valid upgrade with a 64 KiB header: must not be accepted. The server answers 431 and
    # closes while we are still sending, so the kernel may reset the connection before we
    # read the answer: an empty answer is acceptable, a 101 is not.
    request = upgrade_request("/echo", extra="X-Big: " + "a" * 65536 + "\r\n")
    with trio.fail_after(LIMIT):
        stream = await raw_connect(server)
        async with stream:
            with suppress(trio.BrokenResourceError):
                await stream.send_all(request)
            answer = await read_all(stream)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert server.recorder.accepted == []


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + os.urandom(64),  # a TLS ClientHello
        b"\x00\xff\xfe garbage\r\n\r\n",
        b"GET\r\n\r\n",
        b"HELLO WORLD HTTP/9.9\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost x\r\n\r\n",
        b"\r\n" * 100,
        os.urandom(4096),
    ],
)
async def test_garbage_does_not_crash_the_server(server: Server, garbage: bytes) -> None:
    with trio.fail_after(LIMIT):
        stream = await raw_connect(server)
        async with stream:
            try:
                await stream.send_all(garbage)
                await stream.send_eof()
            except trio.BrokenResourceError:
                pass
            answer = await read_all(stream)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:200]
        # Still serving.
        async with tw_client(server.url("/echo")) as ws:
            await ws.send_message("alive")
            assert await ws.get_message() == "alive"


async def test_client_that_disconnects_before_a_request(server: Server) -> None:
    with trio.fail_after(LIMIT):
        stream = await raw_connect(server)
        await stream.aclose()
        stream = await raw_connect(server)
        async with stream:
            await stream.send_all(b"GET /echo HTTP/1.1\r\nHo")
        async with tw_client(server.url("/echo")) as ws:
            await ws.send_message("alive")
            assert await ws.get_message() == "alive"


@pytest.mark.parametrize("partial_request", [b"", b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n"])
async def test_slow_request_times_out(nursery: trio.Nursery, partial_request: bytes) -> None:
    server = await start_server(nursery, handshake_timeout=0.2)
    with trio.fail_after(LIMIT):
        stream = await raw_connect(server)
        async with stream:
            start = trio.current_time()
            if partial_request:
                await stream.send_all(partial_request)
            answer = await read_all(stream)  # the server gives up and closes
            assert trio.current_time() - start >= 0.15
    assert answer == b""
    assert server.recorder.accepted == []


async def test_fragmented_message_with_interleaved_ping(server: Server) -> None:
    def frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
        key = os.urandom(4)
        masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        return frame_header(opcode, len(payload), fin=fin, mask_key=key) + masked

    with trio.fail_after(LIMIT):
        stream, rest = await raw_upgrade(server, "/echo")
        async with stream:
            await stream.send_all(
                frame(Opcode.TEXT, "Hé".encode()[:2], fin=False)  # split inside "é"
                + frame(Opcode.PING, b"p1")
                + frame(Opcode.CONTINUATION, "Hé".encode()[2:], fin=False)
                + frame(Opcode.CONTINUATION, b"llo")
            )
            expected = frame_header(Opcode.PONG, 2) + b"p1"
            expected += frame_header(Opcode.TEXT, len("Héllo".encode())) + "Héllo".encode()
            data = rest
            while len(data) < len(expected):
                data += await stream.receive_some()
            assert data == expected


async def test_frames_right_after_the_request(server: Server) -> None:
    """Bytes that arrive with the request head (h11's trailing data) are not lost."""
    with trio.fail_after(LIMIT):
        stream = await raw_connect(server)
        async with stream:
            key = base64.b64encode(os.urandom(16)).decode()
            frames = b"".join(
                bytes(part)
                for message in (b"first", b"second")
                for part in encode_frame(Opcode.BINARY, message, mask=True)
            )
            await stream.send_all(upgrade_request("/echo", key=key) + frames)
            head, rest = await read_head(stream)
            assert head.startswith(b"HTTP/1.1 101 ")
            assert accept_key(key).encode() in head
            data = rest
            expected = b"".join(
                bytes(p)
                for m in (b"first", b"second")
                for p in encode_frame(Opcode.BINARY, m, mask=False)
            )
            while len(data) < len(expected):
                data += await stream.receive_some()
            assert data == expected


# --- our server: peers that misbehave after the upgrade ---------------------------------------


async def test_peer_drops_tcp_gives_1006(server: Server) -> None:
    with trio.fail_after(LIMIT):
        stream, _ = await raw_upgrade(server, "/record")
        for part in encode_frame(Opcode.TEXT, b"hello", mask=True):
            await stream.send_all(bytes(part))
        await stream.aclose()  # no Close frame
        await server.recorder.done.wait()
    err = server.recorder.error
    assert isinstance(err, ConnectionClosed)
    assert err.code == 1006
    assert server.recorder.received == ["hello"]


async def test_unmasked_client_frame_gets_1002(server: Server) -> None:
    with trio.fail_after(LIMIT):
        stream, _ = await raw_upgrade(server, "/record")
        async with stream:
            for part in encode_frame(Opcode.TEXT, b"hello", mask=False):
                await stream.send_all(bytes(part))
            # The server half-closes right after its Close: we see EOF while our side is
            # still open, not only when its linger time runs out.
            with trio.fail_after(FAIL_LINGER / 2):
                answer = await read_all(stream)
        await server.recorder.done.wait()
    # An unmasked Close (server → client) carrying 1002 and a reason.
    assert answer[0] == 0x88
    assert answer[1] == len(answer) - 2
    assert answer[2:4] == (1002).to_bytes(2, "big")
    err = server.recorder.error
    assert isinstance(err, ConnectionClosed)
    assert err.code == 1002


@pytest.mark.parametrize(
    ("payload", "seen", "answered"),
    [
        (b"", (1005, ""), 1000),  # no status: the handler sees 1005, the echo says 1000
        ((4000).to_bytes(2, "big") + "é".encode(), (4000, "é"), 4000),
        ((1001).to_bytes(2, "big"), (1001, ""), 1001),
        ((1006).to_bytes(2, "big"), (1002, None), 1002),  # 1006 must never be on the wire
        ((999).to_bytes(2, "big"), (1002, None), 1002),
        (b"\x03", (1002, None), 1002),
        ((1000).to_bytes(2, "big") + b"\xff", (1007, None), 1007),
    ],
    ids=["empty", "4000", "1001", "1006", "999", "one-byte", "bad-utf8"],
)
async def test_client_close_frames(
    server: Server, payload: bytes, seen: tuple[int, str | None], answered: int
) -> None:
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    with trio.fail_after(LIMIT):
        stream, _ = await raw_upgrade(server, "/record")
        async with stream:
            await stream.send_all(frame_header(Opcode.CLOSE, len(payload), mask_key=key) + masked)
            with trio.fail_after(FAIL_LINGER / 2):
                answer = await read_all(stream)
        await server.recorder.done.wait()
    assert answer[0] == 0x88
    assert answer[1] == len(answer) - 2
    assert int.from_bytes(answer[2:4], "big") == answered
    err = server.recorder.error
    assert isinstance(err, ConnectionClosed)
    assert err.code == seen[0]
    if seen[1] is not None:
        assert err.reason == seen[1]


async def test_invalid_utf8_text_gets_1007(server: Server) -> None:
    with trio.fail_after(LIMIT):
        stream, _ = await raw_upgrade(server, "/record")
        async with stream:
            for part in encode_frame(Opcode.TEXT, b"\xff\xfe", mask=True):
                await stream.send_all(bytes(part))
            with trio.fail_after(FAIL_LINGER / 2):
                answer = await read_all(stream)
        await server.recorder.done.wait()
    assert answer[0] == 0x88
    assert answer[2:4] == (1007).to_bytes(2, "big")
    err = server.recorder.error
    assert isinstance(err, ConnectionClosed)
    assert err.code == 1007


# --- our client, trio-websocket server --------------------------------------------------------


@attrs.define
class TwServer:
    port: int
    closed: list[trio_websocket.CloseReason | None] = attrs.field(factory=list)
    done: trio.Event = attrs.field(factory=trio.Event)

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"


@pytest.fixture
async def tw_server(nursery: trio.Nursery) -> TwServer:
    state = TwServer(port=0)

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        if request.path.startswith("/reject"):
            await request.reject(403, body=b"go away")
            return
        ws = await request.accept()
        try:
            if request.path == "/close4002":
                await ws.get_message()
                await ws.aclose(4002, "srv")
                return
            if request.path == "/ping":
                await ws.ping(b"from-server")  # returns once our client answered
                await ws.send_message("ponged")
            while True:
                await ws.send_message(await ws.get_message())
        except trio_websocket.ConnectionClosed as exc:
            state.closed.append(exc.reason)
        finally:
            state.done.set()

    server = await nursery.start(
        partial(
            trio_websocket.serve_websocket,
            handler,
            "127.0.0.1",
            0,
            None,
            max_message_size=BIG_LIMIT,
            receive_buffer_size=None,
        )
    )
    state.port = server.port
    return state


@pytest.mark.parametrize("text", [True, False], ids=["text", "binary"])
async def test_our_client_echo(tw_server: TwServer, text: bool) -> None:
    with trio.fail_after(LIMIT):
        ws = await connect_websocket(tw_server.url("/echo"), max_message_size=BIG_LIMIT)
        try:
            for size in SIZES:
                message = _payload(size, text)
                await ws.send(message)
                echoed = await ws.receive()
                assert type(echoed) is type(message)
                assert echoed == message, size
            # A batch in one write.
            batch = [f"b{i}" if i % 3 else f"b{i}".encode() for i in range(200)]
            await ws.send_many(batch)
            assert [await ws.receive() for _ in batch] == batch
        finally:
            await ws.close()
        await tw_server.done.wait()
    assert tw_server.closed[0] is not None
    assert tw_server.closed[0].code == 1000


async def test_our_client_concurrent_senders(tw_server: TwServer) -> None:
    """Sends from many tasks are serialized: the peer's parser sees only whole frames."""
    with trio.fail_after(LIMIT):
        ws = await connect_websocket(tw_server.url("/echo"), max_message_size=BIG_LIMIT)
        senders, per_sender = 10, 30
        try:

            async def sender(n: int) -> None:
                for i in range(per_sender):
                    await ws.send(f"{n}:{i}:" + "x" * (i * 997 % 70_000))

            got: list[str] = []
            async with trio.open_nursery() as nursery:
                for n in range(senders):
                    nursery.start_soon(sender, n)
                for _ in range(senders * per_sender):
                    message = await ws.receive()
                    assert isinstance(message, str)
                    got.append(message)
        finally:
            await ws.close()
    assert sorted(got) == sorted(
        f"{n}:{i}:" + "x" * (i * 997 % 70_000) for n in range(senders) for i in range(per_sender)
    )
    for n in range(senders):  # each sender's messages stay in order
        mine = [m for m in got if m.startswith(f"{n}:")]
        assert [int(m.split(":")[1]) for m in mine] == list(range(per_sender))


async def test_our_client_closes_with_code(tw_server: TwServer) -> None:
    with trio.fail_after(LIMIT):
        ws = await connect_websocket(tw_server.url("/echo"), max_message_size=BIG_LIMIT)
        await ws.send("hi")
        assert await ws.receive() == "hi"
        await ws.close(4005, "client says bye")
        assert ws.closed
        await ws.close()  # idempotent
        with pytest.raises(trio.ClosedResourceError) as info:
            await ws.receive()
        assert not isinstance(info.value, trio.BrokenResourceError)
        with pytest.raises(trio.ClosedResourceError) as info:
            await ws.send("more")
        assert not isinstance(info.value, trio.BrokenResourceError)
        await tw_server.done.wait()
    reason = tw_server.closed[0]
    assert reason is not None
    assert (reason.code, reason.reason) == (4005, "client says bye")


async def test_our_client_sees_server_close(tw_server: TwServer) -> None:
    with trio.fail_after(LIMIT):
        ws = await connect_websocket(tw_server.url("/close4002"), max_message_size=BIG_LIMIT)
        await ws.send("go")
        with pytest.raises(ConnectionClosed) as info:
            await ws.receive()
        assert isinstance(info.value, trio.BrokenResourceError)
        assert (info.value.code, info.value.reason) == (4002, "srv")
        assert ws.close_info == (4002, "srv")
        # It stays broken, for receive and send alike.
        with pytest.raises(ConnectionClosed) as info:
            await ws.receive()
        assert info.value.code == 4002
        with pytest.raises(ConnectionClosed):
            await ws.send("late")
        await ws.close()  # harmless after the fact
        await tw_server.done.wait()


async def test_our_client_answers_server_pings(tw_server: TwServer) -> None:
    with trio.fail_after(LIMIT):
        ws = await connect_websocket(tw_server.url("/ping"), max_message_size=BIG_LIMIT)
        try:
            assert await ws.receive() == "ponged"
        finally:
            await ws.close()


async def test_our_client_enforces_max_message_size(tw_server: TwServer) -> None:
    with trio.fail_after(LIMIT):
        ws = await connect_websocket(tw_server.url("/echo"), max_message_size=1000)
        await ws.send(b"y" * 1000)
        assert await ws.receive() == b"y" * 1000
        await ws.send(b"z" * 1001)  # we may send it; its echo is too big for us
        with pytest.raises(ConnectionClosed) as info:
            await ws.receive()
        assert info.value.code == 1009
        await tw_server.done.wait()
    reason = tw_server.closed[0]
    assert reason is not None
    assert reason.code == 1009


async def test_our_client_rejected(tw_server: TwServer) -> None:
    with trio.fail_after(LIMIT):
        with pytest.raises(HandshakeError) as info:
            await connect_websocket(tw_server.url("/reject?x=1"), max_message_size=BIG_LIMIT)
    assert info.value.status == 403
    assert info.value.body == "go away"


async def test_our_client_against_our_server_rejects(server: Server) -> None:
    with trio.fail_after(LIMIT):
        with pytest.raises(HandshakeError) as info:
            await connect_websocket(server.url("/busy"), max_message_size=BIG_LIMIT)
        assert (info.value.status, info.value.body) == (409, "taken")
        with pytest.raises(HandshakeError) as info:
            await connect_websocket(server.url("/nope"), max_message_size=BIG_LIMIT)
        assert info.value.status == 404


# --- our client against raw servers -------------------------------------------------------------


async def start_raw_server(
    nursery: trio.Nursery, behave: Callable[[trio.SocketStream, bytes, str], Awaitable[None]]
) -> int:
    """A TCP server that reads the upgrade request and hands over to ``behave``."""

    async def handler(stream: trio.SocketStream) -> None:
        async with stream:
            head, rest = await read_head(stream)
            key = next(
                line.split(b":", 1)[1].strip().decode()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            await behave(stream, rest, key)

    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    port: int = listeners[0].socket.getsockname()[1]
    return port


def switching_protocols(key: str, *, accept: str | None = None) -> bytes:
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept if accept is not None else accept_key(key)}\r\n\r\n"
    ).encode()


async def test_our_client_sees_tcp_drop_as_1006(nursery: trio.Nursery) -> None:
    async def behave(stream: trio.SocketStream, rest: bytes, key: str) -> None:
        # The 101 and a first message in one write, then hang up without a Close.
        await stream.send_all(switching_protocols(key) + frame_header(Opcode.TEXT, 2) + b"hi")

    port = await start_raw_server(nursery, behave)
    with trio.fail_after(LIMIT):
        ws = await connect_websocket(f"ws://127.0.0.1:{port}/", max_message_size=BIG_LIMIT)
        assert await ws.receive() == "hi"
        with pytest.raises(ConnectionClosed) as info:
            await ws.receive()
        assert info.value.code == 1006
        assert isinstance(info.value, trio.BrokenResourceError)
        await ws.close()


async def test_our_client_rejects_masked_server_frames(nursery: trio.Nursery) -> None:
    got_close = trio.Event()
    answer: list[bytes] = []

    async def behave(stream: trio.SocketStream, rest: bytes, key: str) -> None:
        masked = b"".join(bytes(p) for p in encode_frame(Opcode.TEXT, b"hi", mask=True))
        await stream.send_all(switching_protocols(key) + masked)
        with trio.fail_after(FAIL_LINGER / 2):  # our client half-closes after its Close
            answer.append(await read_all(stream))
        got_close.set()

    port = await start_raw_server(nursery, behave)
    with trio.fail_after(LIMIT):
        ws = await connect_websocket(f"ws://127.0.0.1:{port}/", max_message_size=BIG_LIMIT)
        with pytest.raises(ConnectionClosed) as info:
            await ws.receive()
        assert info.value.code == 1002
        await got_close.wait()
    # Our Close frame is masked (client → server) and carries 1002.
    frame = answer[0]
    assert frame[0] == 0x88
    assert frame[1] & 0x80  # masked
    length = frame[1] & 0x7F  # a Close payload is at most 125 bytes: no extended length
    key = frame[2:6]
    payload = bytes(b ^ key[i % 4] for i, b in enumerate(frame[6 : 6 + length]))
    assert payload[:2] == (1002).to_bytes(2, "big")


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: d3JvbmcK\r\n\r\n",
        b"HTTP/1.1 500 Oops\r\nContent-Length: 4\r\n\r\nfail",
        b"HTTP/1.1 200 OK\r\n\r\nno length, ends at EOF",
        b"this is not http\r\n\r\n",
        b"",
    ],
    ids=["wrong-accept", "500", "200-eof", "not-http", "hang-up"],
)
async def test_our_client_bad_handshake_answers(nursery: trio.Nursery, response: bytes) -> None:
    async def behave(stream: trio.SocketStream, rest: bytes, key: str) -> None:
        await stream.send_all(response)

    port = await start_raw_server(nursery, behave)
    with trio.fail_after(LIMIT):
        with pytest.raises(HandshakeError) as info:
            await connect_websocket(f"ws://127.0.0.1:{port}/", max_message_size=BIG_LIMIT)
    expected_status = {b"HTTP/1.1 5": 500, b"HTTP/1.1 2": 200, b"HTTP/1.1 1": 101}.get(
        response[:10], 0
    )
    assert info.value.status == expected_status
    if expected_status == 500:
        assert info.value.body == "fail"


async def test_our_client_connect_timeout(nursery: trio.Nursery) -> None:
    async def behave(stream: trio.SocketStream, rest: bytes, key: str) -> None:
        await trio.sleep_forever()

    port = await start_raw_server(nursery, behave)
    with trio.fail_after(LIMIT):
        with pytest.raises(trio.TooSlowError):
            await connect_websocket(
                f"ws://127.0.0.1:{port}/", max_message_size=BIG_LIMIT, connect_timeout=0.2
            )


async def test_bad_urls() -> None:
    for url in ("http://127.0.0.1/", "ws:///path", "127.0.0.1:80"):
        with pytest.raises(ValueError, match="URL"):
            await connect_websocket(url, max_message_size=BIG_LIMIT)


# --- our WebSocket's trio semantics ---------------------------------------------------------------


@pytest.fixture
async def our_pair(server: Server) -> AsyncIterator[WebSocket]:
    """Our client connected to our server's /record route."""
    ws = await connect_websocket(server.url("/record"), max_message_size=BIG_LIMIT)
    try:
        yield ws
    finally:
        with trio.move_on_after(LIMIT):
            await ws.close()


async def test_second_concurrent_receive_is_busy(our_pair: WebSocket, server: Server) -> None:
    ws = our_pair
    first: list[BaseException] = []
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:

            async def receiver() -> None:
                try:
                    await ws.receive()
                except ConnectionClosed as exc:
                    first.append(exc)

            nursery.start_soon(receiver)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await ws.receive()
            # Closing while another task receives: the close handshake completes through
            # that task, which then sees the (echoed) close.
            await ws.close(4009, "done")
        await server.recorder.done.wait()
    (exc,) = first
    assert isinstance(exc, ConnectionClosed)
    assert exc.code == 4009
    err = server.recorder.error
    assert isinstance(err, ConnectionClosed)
    assert (err.code, err.reason) == (4009, "done")


async def test_receive_after_we_closed_is_closed_resource(our_pair: WebSocket) -> None:
    ws = our_pair
    with trio.fail_after(LIMIT):
        await ws.send(b"x")
        await ws.close()
        for op in (ws.receive, partial(ws.send, "x"), partial(ws.send_many, ["a", b"b"])):
            with pytest.raises(trio.ClosedResourceError) as info:
                await op()
            assert not isinstance(info.value, trio.BrokenResourceError)


async def test_abort_is_seen_as_1006(our_pair: WebSocket, server: Server) -> None:
    ws = our_pair
    with trio.fail_after(LIMIT):
        await ws.send("before")
        await ws.abort()
        await server.recorder.done.wait()
        with pytest.raises(trio.ClosedResourceError):
            await ws.receive()
    err = server.recorder.error
    assert isinstance(err, ConnectionClosed)
    assert err.code == 1006
    assert server.recorder.received == ["before"]


async def test_our_client_and_server_large_round_trip(server: Server) -> None:
    with trio.fail_after(LIMIT):
        ws = await connect_websocket(server.url("/echo"), max_message_size=BIG_LIMIT)
        try:
            for message in (os.urandom(5 * MiB), "ü" * (2 * MiB), b"", ""):
                await ws.send(message)
                assert await ws.receive() == message
        finally:
            await ws.close()
        await server.recorder.done.wait()
    assert isinstance(server.recorder.error, ConnectionClosed)
    assert server.recorder.error.code == 1000
