"""Limits of our RFC 6455 layer against hostile peers (issue 14, "Hostile input, round 2").

Sans-IO first: :class:`FrameReader` counts the frames and bytes of a fragmented message and
holds only its payload bytes; the handshake module redacts secrets and answers HEAD without a
body. Then the request-head limit at its exact boundary, on our server and on our client,
over loopback TCP (port 0), every test under ``trio.fail_after``.
"""

from __future__ import annotations

import base64
import os
import tracemalloc
from functools import partial
from typing import TYPE_CHECKING

import h11
import pytest
import trio

from iii_trio._ws import (
    Accept,
    HandshakeError,
    HandshakeRequest,
    MessageSocket,
    Reject,
    connect_websocket,
    handle_connection,
)
from iii_trio._ws._frames import (
    MAX_MESSAGE_FRAMES,
    MESSAGE_TOO_BIG,
    POLICY_VIOLATION,
    FrameError,
    FrameReader,
    Opcode,
    frame_header,
)
from iii_trio._ws._handshake import (
    MAX_REQUEST_HEAD,
    REDACTED,
    accept_key,
    parse_request,
    redact,
    reject_events,
)
from iii_trio._ws._mask import apply_mask

if TYPE_CHECKING:
    from collections.abc import Callable

LIMIT = 10  # seconds: the hard cap of every async test
KEY = b"\x37\xfa\x21\x3d"


def _frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True) -> bytes:
    if not masked:
        return frame_header(opcode, len(payload), fin=fin) + payload
    return frame_header(opcode, len(payload), fin=fin, mask_key=KEY) + apply_mask(payload, KEY)


def _fragmented(
    parts: list[bytes], *, opcode: int = Opcode.BINARY, masked: bool = True, fin: bool = True
) -> bytes:
    """One message in ``len(parts)`` frames (the last one without FIN if not ``fin``)."""
    last = len(parts) - 1
    return b"".join(
        _frame(
            opcode if i == 0 else Opcode.CONTINUATION,
            part,
            fin=fin and i == last,
            masked=masked,
        )
        for i, part in enumerate(parts)
    )


def _drain(reader: FrameReader) -> list[tuple[Opcode, bytes]]:
    out: list[tuple[Opcode, bytes]] = []
    while (event := reader.next_message()) is not None:
        out.append(event)
    return out


def _reader(*, server: bool = True, max_size: int = 1 << 30, **kwargs: int) -> FrameReader:
    return FrameReader(expect_masked=server, max_message_size=max_size, **kwargs)


# --- fragment counts ---------------------------------------------------------------------------


@pytest.mark.parametrize("server", [True, False])
@pytest.mark.parametrize("size", [0, 2])
def test_a_message_may_span_exactly_the_frame_limit(server: bool, size: int) -> None:
    reader = _reader(server=server)
    parts = [bytes([i % 256]) * size for i in range(MAX_MESSAGE_FRAMES)]
    reader.feed(_fragmented(parts, masked=server))
    assert _drain(reader) == [(Opcode.BINARY, b"".join(parts))]
    # The count starts again with the next message.
    reader.feed(_fragmented(parts, masked=server, opcode=Opcode.TEXT))
    assert _drain(reader) == [(Opcode.TEXT, b"".join(parts))]


@pytest.mark.parametrize("server", [True, False])
@pytest.mark.parametrize("size", [0, 2], ids=["empty-continuations", "2-byte-fragments"])
def test_one_frame_more_is_a_policy_violation(server: bool, size: int) -> None:
    reader = _reader(server=server)
    reader.feed(_fragmented([b"x" * size] * MAX_MESSAGE_FRAMES, masked=server, fin=False))
    assert _drain(reader) == []
    # Only the next frame's header is needed to refuse it.
    reader.feed(_frame(Opcode.CONTINUATION, b"x" * size, masked=server)[:2])
    with pytest.raises(FrameError) as info:
        reader.next_message()
    assert info.value.code == POLICY_VIOLATION
    assert str(MAX_MESSAGE_FRAMES) in info.value.reason


def test_a_flood_of_empty_continuations_ends() -> None:
    """Empty frames never reach the byte limit; the frame limit ends the message anyway."""
    reader = _reader()
    reader.feed(_frame(Opcode.TEXT, b"{", fin=False))
    flood = _frame(Opcode.CONTINUATION, b"", fin=False) * 1000
    with pytest.raises(FrameError) as info:
        for _ in range(100):
            reader.feed(flood)
            assert reader.next_message() is None
    assert info.value.code == POLICY_VIOLATION
    assert reader.buffered < 1000 * len(flood)  # it stopped early: at most one batch is held


def test_control_frames_between_fragments_count() -> None:
    reader = _reader(max_message_frames=5)
    reader.feed(_frame(Opcode.BINARY, b"a", fin=False))
    pings = [_frame(Opcode.PING, bytes([n])) for n in range(4)]
    reader.feed(b"".join(pings))
    assert _drain(reader) == [(Opcode.PING, bytes([n])) for n in range(4)]  # answered as usual
    with pytest.raises(FrameError) as info:
        reader.feed(_frame(Opcode.PONG, b""))  # the 6th frame of the message
        reader.next_message()
    assert info.value.code == POLICY_VIOLATION


def test_control_frames_between_messages_do_not_count() -> None:
    reader = _reader(max_message_frames=2)
    reader.feed(_frame(Opcode.PING, b"") * 100 + _fragmented([b"a", b"b"]))
    assert _drain(reader) == [(Opcode.PING, b"")] * 100 + [(Opcode.BINARY, b"ab")]


def test_the_frame_limit_is_configurable() -> None:
    reader = _reader(max_message_frames=3)
    reader.feed(_fragmented([b"a", b"b", b"c"]))
    assert _drain(reader) == [(Opcode.BINARY, b"abc")]
    with pytest.raises(FrameError) as info:
        reader.feed(_fragmented([b"a", b"b", b"c", b"d"]))
        _drain(reader)
    assert info.value.code == POLICY_VIOLATION
    # An unfragmented message is one frame, whatever the limit.
    one = _reader(max_message_frames=1)
    one.feed(_frame(Opcode.TEXT, b"whole") * 3)
    assert _drain(one) == [(Opcode.TEXT, b"whole")] * 3


def test_small_fragments_reach_the_byte_limit_first() -> None:
    reader = _reader(max_size=100)
    reader.feed(_fragmented([b"ab"] * 50, fin=False))
    assert _drain(reader) == []
    with pytest.raises(FrameError) as info:
        reader.feed(_frame(Opcode.CONTINUATION, b"c")[:2])
        reader.next_message()
    assert info.value.code == MESSAGE_TOO_BIG


def test_the_iii_sdks_fragmenting_fits_with_room_to_spare() -> None:
    """The official Python SDK fragments large JSON into 1 MiB frames: 80 for an 80 MiB
    message (the engine's default limit); scaled down here, same frame count."""
    reader = _reader()
    parts = [os.urandom(1024) for _ in range(80)]
    reader.feed(_fragmented(parts, opcode=Opcode.TEXT))
    assert _drain(reader) == [(Opcode.TEXT, b"".join(parts))]
    assert MAX_MESSAGE_FRAMES >= 50 * 80


# --- memory while a message is assembled -------------------------------------------------------


@pytest.mark.parametrize("server", [True, False])
def test_assembly_holds_payload_bytes_not_fragment_objects(server: bool) -> None:
    """4000 two-byte fragments: the reader holds their 8000 bytes (in one bytearray), not
    4000 objects (which took about 40 bytes each, 20 times the payload)."""
    fragments = 4000
    wire = _fragmented([b"ab"] * fragments, masked=server, fin=False)
    reader = _reader(server=server)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        reader.feed(wire)
        assert reader.next_message() is None  # all parsed: the receive buffer is let go
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    payload = 2 * fragments
    assert reader.buffered == payload
    assert held < 2 * payload + 1024, held
    reader.feed(_frame(Opcode.CONTINUATION, b"!", masked=server))
    assert _drain(reader) == [(Opcode.BINARY, b"ab" * fragments + b"!")]


@pytest.mark.parametrize("server", [True, False])
def test_fragments_of_every_size_reassemble(server: bool) -> None:
    # Around the size at which a fragment is kept as a part of its own (4 KiB).
    sizes = [1, 4095, 4096, 0, 4097, 2, 2, 10_000, 3, 4096, 1]
    parts = [os.urandom(size) for size in sizes]
    reader = _reader(server=server)
    wire = _fragmented(parts, masked=server, opcode=Opcode.TEXT)
    for cut in range(0, len(wire), 777):  # in arbitrary pieces
        reader.feed(wire[cut : cut + 777])
    assert _drain(reader) == [(Opcode.TEXT, b"".join(parts))]


def test_alternating_sizes_hold_little_more_than_the_payload() -> None:
    """The worst case for the parts kept: a tiny fragment between big ones."""
    parts = [b"x" * (4096 if n % 2 else 1) for n in range(400)]
    wire = _fragmented(parts, fin=False)
    reader = _reader()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        reader.feed(wire)
        assert reader.next_message() is None
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    payload = sum(map(len, parts))
    assert held < payload * 1.04 + 1024, (held, payload)


# --- over loopback TCP ------------------------------------------------------------------------


def _upgrade_request_of(size: int, key: str) -> bytes:
    """A valid upgrade request whose head is exactly ``size`` bytes."""
    base = (
        "GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nX-Pad: \r\n\r\n"
    ).encode()
    request = base.replace(b"X-Pad: ", b"X-Pad: " + b"a" * (size - len(base)))
    assert len(request) == size
    return request


async def _read_answer(stream: trio.abc.ReceiveStream) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some()
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


async def _echo(ws: MessageSocket) -> None:
    await ws.send(await ws.receive())


def _router(request: HandshakeRequest, peer: str) -> Accept | Reject:
    return Accept(_echo, max_message_size=1024)


# --- pings ----------------------------------------------------------------------------------


async def test_pings_read_together_get_one_pong_for_the_latest(nursery: trio.Nursery) -> None:
    """RFC 6455 section 5.5.3 lets an endpoint answer only the latest of several pings: a
    flood of them costs a parse each, not a write each."""
    listeners = await nursery.start(
        partial(trio.serve_tcp, partial(handle_connection, router=_router), 0, host="127.0.0.1")
    )
    port = listeners[0].socket.getsockname()[1]
    key = base64.b64encode(os.urandom(16)).decode()
    pings = b"".join(_frame(Opcode.PING, b"%d" % n) for n in range(1000))
    with trio.fail_after(LIMIT):
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await stream.send_all(
                _upgrade_request_of(300, key) + pings + _frame(Opcode.TEXT, b"after")
            )
            head, rest = await _read_answer(stream)
            assert head.startswith(b"HTTP/1.1 101 "), head
            reader = FrameReader(expect_masked=False, max_message_size=1024)
            reader.feed(rest)
            events: list[tuple[Opcode, bytes]] = []
            while not events or events[-1][0] != Opcode.TEXT:
                event = reader.next_message()
                if event is None:
                    reader.feed(await stream.receive_some())
                else:
                    events.append(event)
    pongs = [payload for opcode, payload in events if opcode == Opcode.PONG]
    assert 1 <= len(pongs) < 1000
    assert pongs[-1] == b"999"  # the latest ping is always answered, before the message
    assert events[-1] == (Opcode.TEXT, b"after")


# --- the handshake, sans-IO -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GET /?token=s3cret HTTP/1.1", f"GET /?token={REDACTED} HTTP/1.1"),
        ("/ws/channels/c?key=k3y&dir=read", f"/ws/channels/c?key={REDACTED}&dir=read"),
        ("/?dir=write&KEY=k3y", f"/?dir=write&KEY={REDACTED}"),
        ("/?tok%65n=s3cret", f"/?tok%65n={REDACTED}"),  # parse_qs decodes names too
        ("/?token=a=b&x=1", f"/?token={REDACTED}&x=1"),
        ("/?a=1;token=s3cret HTTP/1.1 x", f"/?a=1;token={REDACTED} HTTP/1.1 x"),  # ; separates
        ("/?token=s3cret;k3y&x=1", f"/?token={REDACTED}&x=1"),  # and is part of a token
        ("/?a=b=c;key=k3y", f"/?a=b=c;key={REDACTED}"),
        (
            'illegal request line: bytearray(b"GET /?token=ab\'cd HTTP/1.1 x")',
            f'illegal request line: bytearray(b"GET /?token={REDACTED} HTTP/1.1 x")',
        ),
        (
            "illegal header line: bytearray(b'Authorization: Bearer s3cret\\x01')",
            f"illegal header line: bytearray(b'Authorization: {REDACTED}",
        ),
        ("sent bearer s3cret, then", f"sent bearer {REDACTED}, then"),
        ("/?monkey=ok&keys=ok&tokens=ok&x=token", "/?monkey=ok&keys=ok&tokens=ok&x=token"),
        ("nothing to hide", "nothing to hide"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert "s3cret" not in redact(text) and "k3y" not in redact(text)


def _request(method: bytes = b"GET", version: bytes = b"1.1") -> h11.Request:
    return h11.Request(
        method=method,
        target=b"/",
        http_version=version,
        headers=[
            (b"Host", b"x"),
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Key", base64.b64encode(os.urandom(16))),
            (b"Sec-WebSocket-Version", b"13"),
        ],
    )


@pytest.mark.parametrize("method", [b"HEAD", b"POST", b"PUT", b"OPTIONS", b"DELETE"])
def test_other_methods_get_405_with_allow(method: bytes) -> None:
    with pytest.raises(HandshakeError) as info:
        parse_request(_request(method))
    assert info.value.status == 405
    assert ("Allow", "GET") in info.value.headers


def test_http_1_0_upgrade_is_refused() -> None:
    with pytest.raises(HandshakeError) as info:
        parse_request(_request(version=b"1.0"))
    assert info.value.status == 400
    assert parse_request(_request()).path == "/"


def test_refusal_of_head_has_no_body() -> None:
    server = h11.Connection(h11.SERVER)
    server.receive_data(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert isinstance(server.next_event(), h11.Request)
    events = reject_events(405, "only GET\n", [("Allow", "GET")], head=True)
    wire = b"".join(server.send(event) or b"" for event in events)
    head, _, body = wire.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n")
    assert b"\r\nAllow: GET" in head
    assert body == b""


# --- the request-head limit at its boundary ---------------------------------------------------


@pytest.mark.parametrize("excess", [-1, 0, 1, 4096, MAX_REQUEST_HEAD])
async def test_server_request_head_limit(nursery: trio.Nursery, excess: int) -> None:
    listeners = await nursery.start(
        partial(trio.serve_tcp, partial(handle_connection, router=_router), 0, host="127.0.0.1")
    )
    port = listeners[0].socket.getsockname()[1]
    key = base64.b64encode(os.urandom(16)).decode()
    with trio.fail_after(LIMIT):
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await stream.send_all(_upgrade_request_of(MAX_REQUEST_HEAD + excess, key))
            head, rest = await _read_answer(stream)
            if excess <= 0:
                assert head.startswith(b"HTTP/1.1 101 "), head
                assert accept_key(key).encode() in head
                await stream.send_all(_frame(Opcode.TEXT, b"still here"))
                data = rest
                while len(data) < 12:
                    data += await stream.receive_some()
                assert data == frame_header(Opcode.TEXT, 10) + b"still here"
            else:
                # The answer arrives whole (the server reads what we sent before closing).
                assert head.startswith(b"HTTP/1.1 431 "), head
                assert rest == b"request head too large\n"


async def _serve_raw(nursery: trio.Nursery, answer: Callable[[str], bytes]) -> int:
    """A TCP server that answers each upgrade request with ``answer(key)`` and a frame."""

    async def handler(stream: trio.SocketStream) -> None:
        async with stream:
            head, _ = await _read_answer(stream)
            key = next(
                line.split(b":", 1)[1].strip().decode()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            await stream.send_all(answer(key) + frame_header(Opcode.TEXT, 2) + b"hi")
            await stream.receive_some()  # until the client goes

    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    port: int = listeners[0].socket.getsockname()[1]
    return port


def _switching_protocols_of(size: int) -> Callable[[str], bytes]:
    def answer(key: str) -> bytes:
        base = (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept_key(key)}\r\nX-Pad: \r\n\r\n"
        ).encode()
        head = base.replace(b"X-Pad: ", b"X-Pad: " + b"a" * (size - len(base)))
        assert len(head) == size
        return head

    return answer


@pytest.mark.parametrize("excess", [-1, 0, 1, MAX_REQUEST_HEAD])
async def test_client_answer_head_limit(nursery: trio.Nursery, excess: int) -> None:
    port = await _serve_raw(nursery, _switching_protocols_of(MAX_REQUEST_HEAD + excess))
    url = f"ws://127.0.0.1:{port}/"
    with trio.fail_after(LIMIT):
        if excess <= 0:
            ws = await connect_websocket(url, max_message_size=1024)
            assert await ws.receive() == "hi"  # the frame right after the head is not lost
            await ws.abort()
        else:
            with pytest.raises(HandshakeError, match="over 16384 bytes"):
                await connect_websocket(url, max_message_size=1024)


async def test_client_counts_informational_answers_toward_the_limit(
    nursery: trio.Nursery,
) -> None:
    def answer(key: str) -> bytes:
        # Each "100 Continue" is small; together they exceed the limit before the 101.
        return b"HTTP/1.1 100 Continue\r\n\r\n" * (MAX_REQUEST_HEAD // 25 + 1) + (
            _switching_protocols_of(200)(key)
        )

    port = await _serve_raw(nursery, answer)
    with trio.fail_after(LIMIT), pytest.raises(HandshakeError, match="over 16384 bytes"):
        await connect_websocket(f"ws://127.0.0.1:{port}/", max_message_size=1024)
