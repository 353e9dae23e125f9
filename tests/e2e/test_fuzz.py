"""A live engine fed thousands of malformed frames over real sockets (issue: bad input never
crashes the engine or disturbs other connections; every bad peer gets an error or a close
code)."""

from __future__ import annotations

import json
from typing import Any

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import iii_trio
from iii_trio._ws import ConnectionClosed, HandshakeError, connect_websocket
from iii_trio._ws._frames import Opcode, encode_frame
from iii_trio.protocol import WIRE_NAMES, Error, Pong, decode

MAX = 64 * 1024  # the test engine's message limit

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(
    [
        "id",
        "function_id",
        "invocation_id",
        "data",
        "action",
        "result",
        "error",
        "worker_id",
        "timeout_ms",
        "namespace",
        "config",
        "trigger_type",
        "description",
        "metadata",
        "x",
    ]
)
message_like = st.builds(
    lambda tag, fields: json.dumps({"type": tag, **fields}),
    st.sampled_from([*WIRE_NAMES.values(), "observe", "nope", ""]) | st.text(max_size=10),
    st.dictionaries(field_names, json_values, max_size=5),
)
bad_text = st.one_of(
    st.text(max_size=200),
    message_like,
    st.just("[" * 5000 + "]" * 5000),
    st.just('{"type":"invokefunction","function_id":"f","invocation_id":"' + "9" * 5000 + '"}'),
    st.just('{"type":"ping","n":' + "9" * 10000 + "}"),
    st.just("NaN"),
    st.just(""),
)
frame = st.one_of(
    st.tuples(st.just("text"), bad_text),
    st.tuples(st.just("binary"), st.binary(max_size=300)),
)
fatal_frame = st.one_of(
    st.tuples(st.just("bad-utf8"), st.just(b"\xff\xfe{}")),
    st.tuples(st.just("oversize"), st.integers(MAX + 1, 4 * MAX)),
    st.tuples(st.just("bad-opcode"), st.integers(3, 7)),
    st.tuples(st.just("unmasked"), st.just(b"hello")),
)


async def _send_raw(ws: Any, data: bytes) -> None:
    await ws.send_stream.send_all(data)


async def _check_engine_still_serves(engine: iii_trio.Engine) -> None:
    async with (
        iii_trio.connect_worker(engine.url, name="good-server") as server,
        iii_trio.connect_worker(engine.url, name="good-client") as client,
    ):
        server.register_function("good::echo", lambda p: p)
        await engine.wait_function("good::echo")
        assert await client.trigger("good::echo", {"still": "fine"}) == {
            "still": "fine",
            "_caller_worker_id": client.worker_id,
        }
        async with client.open_channel() as channel:
            await channel.writer.send_all(b"ok")
            await channel.writer.aclose()
            assert await channel.reader.read_all() == b"ok"


@settings(max_examples=120)  # ~2,500 malformed frames per run
@given(frames=st.lists(frame, min_size=1, max_size=40), fatal=st.none() | fatal_frame)
async def test_malformed_control_frames(
    frames: list[tuple[str, Any]], fatal: tuple[str, Any] | None
) -> None:
    async with iii_trio.open_engine(port=0, max_message_size=MAX) as engine:
        with trio.fail_after(20):
            ws = await connect_websocket(engine.url, max_message_size=1 << 22)
            try:
                for kind, value in frames:
                    await ws.send(
                        value.encode() if kind == "binary" and isinstance(value, str) else value
                    )
                await ws.send(json.dumps({"type": "ping"}))
                # Every reply is a well-formed message; the connection stays usable.
                errors = 0
                while True:
                    reply = decode(await ws.receive())
                    if isinstance(reply, Error):
                        errors += 1
                        assert (
                            reply.error.code in ("invalid_message", "unknown_type")
                            and reply.error.message
                        )
                    if isinstance(reply, Pong):
                        break
                if fatal is not None:
                    kind, value = fatal
                    if kind == "bad-utf8":
                        await _send_raw(ws, b"".join(encode_frame(Opcode.TEXT, value, mask=True)))
                        expected = 1007
                    elif kind == "oversize":
                        await ws.send(b"x" * value)
                        expected = 1009
                    elif kind == "bad-opcode":
                        await _send_raw(ws, b"".join(encode_frame(value, b"", mask=True)))
                        expected = 1002
                    else:
                        await _send_raw(ws, b"".join(encode_frame(Opcode.TEXT, value, mask=False)))
                        expected = 1002
                    try:
                        while True:
                            await ws.receive()
                    except ConnectionClosed as exc:
                        assert exc.code == expected, (kind, exc.code)
            finally:
                await ws.abort()
            await _check_engine_still_serves(engine)


raw_requests = st.one_of(
    st.binary(min_size=1, max_size=500),
    st.just(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
    st.just(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"),
    st.just(
        b"GET /ws/channels/x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    ),
    st.just(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n\r\n"
    ),
    st.just(b"GET / HTTP/1.1\r\n" + b"X-Long: " + b"a" * 20000 + b"\r\n\r\n"),
)


@given(requests=st.lists(raw_requests, min_size=1, max_size=10))
async def test_garbage_before_the_handshake(requests: list[bytes]) -> None:
    async with iii_trio.open_engine(port=0, handshake_timeout=2) as engine:
        with trio.fail_after(30):
            for data in requests:
                stream = await trio.open_tcp_stream("127.0.0.1", engine.port)
                async with stream:
                    try:
                        await stream.send_all(data)
                        await stream.send_eof()
                        answer = b""
                        while chunk := await stream.receive_some():
                            answer += chunk
                    except trio.BrokenResourceError:
                        answer = b""
                # Either an HTTP error status or a closed socket, never a 101.
                assert not answer.startswith(b"HTTP/1.1 101")
                if answer:
                    assert answer.startswith(b"HTTP/1.1 4"), answer[:40]
            await _check_engine_still_serves(engine)


channel_queries = st.builds(
    lambda key, direction, cid: (key, direction, cid),
    st.sampled_from(["right", "wrong", "missing", "other-end"]),
    st.sampled_from(["read", "write", "sideways", None]),
    st.sampled_from(["right", "unknown"]),
)


@given(
    attempts=st.lists(channel_queries, min_size=1, max_size=8),
    garbage=st.lists(st.binary(max_size=200), max_size=10),
)
async def test_channel_sockets_with_wrong_keys_and_garbage(
    attempts: list[tuple[str, Any, str]], garbage: list[bytes]
) -> None:
    async with (
        iii_trio.open_engine(port=0) as engine,
        iii_trio.connect_worker(engine.url) as worker,
    ):
        channel = await worker.create_channel()
        w, r = channel.writer_ref, channel.reader_ref
        with trio.fail_after(30):
            for key, direction, cid in attempts:
                ref = r if direction == "read" else w
                other = w if direction == "read" else r
                parts = []
                if key != "missing":
                    parts.append(
                        "key="
                        + {"right": ref.access_key, "wrong": "nope", "other-end": other.access_key}[
                            key
                        ]
                    )
                if direction is not None:
                    parts.append(f"dir={direction}")
                channel_id = ref.channel_id if cid == "right" else "unknown"
                url = f"{engine.url}/ws/channels/{channel_id}?{'&'.join(parts)}"
                valid = key == "right" and direction in ("read", "write") and cid == "right"
                try:
                    ws = await connect_websocket(url, max_message_size=1 << 20)
                except HandshakeError as exc:
                    # A valid ref is refused only because its end is already attached (409),
                    # or because the channel is over and has left the table (404).
                    gone = ref.channel_id not in engine._broker.channels
                    assert not valid or exc.status == (404 if gone else 409)
                    assert exc.status in (400, 404, 409)
                    continue
                assert valid
                # An attached end that sends garbage frames is closed with a protocol code,
                # or (a reader) has its data ignored; the engine carries on.
                try:
                    for blob in garbage:
                        await _send_raw(ws, blob)
                    await ws.close()
                except trio.BrokenResourceError:
                    # ConnectionClosed, or a raw write after the engine dropped the
                    # connection for the garbage before it (broken pipe).
                    pass
                finally:
                    await ws.abort()
            await _check_engine_still_serves(engine)
