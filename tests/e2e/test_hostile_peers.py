"""Hostile peers against a real engine on 127.0.0.1 (issue 14, "Hostile input, round 2"):
fragment floods from raw sockets while a well-behaved worker keeps calling, absurd integers in
messages, and an engine at its file-descriptor limit (in a child process)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable

import pytest
import trio

import iii_trio
from benchmarks._harness import PeakRss
from iii_trio._ws._frames import (
    MAX_MESSAGE_FRAMES,
    MESSAGE_TOO_BIG,
    POLICY_VIOLATION,
    FrameReader,
    Opcode,
    frame_header,
    parse_close,
)
from iii_trio._ws._mask import apply_mask
from iii_trio.protocol import (
    MAX_TIMEOUT_MS,
    Error,
    InvocationResult,
    InvokeFunction,
    Ping,
    Pong,
    RegisterFunction,
)
from tests.helpers import RawClient, new_id

# --- fragment floods --------------------------------------------------------------------------

KEY = b"\x9a\x0b\x5c\x21"


def _frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    return frame_header(opcode, len(payload), fin=fin, mask_key=KEY) + apply_mask(payload, KEY)


async def _attack(port: int, flood: bytes) -> int:
    """Upgrade a raw socket to a worker connection, send ``flood``, return the close code."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        key = base64.b64encode(os.urandom(16)).decode()
        await stream.send_all(
            (
                f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some()
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        reader = FrameReader(expect_masked=False, max_message_size=1 << 20)
        reader.feed(rest)

        async def send_flood() -> None:
            try:
                await stream.send_all(flood)
            except trio.BrokenResourceError:
                pass  # closed on us mid-flood: the close frame is read all the same

        async with trio.open_nursery() as nursery:
            # Read while sending, as a peer must: pongs come back while the pings go out.
            nursery.start_soon(send_flood)
            while True:
                event = reader.next_message()
                if event is None:
                    chunk = await stream.receive_some()
                    assert chunk, "connection closed without a close frame"
                    reader.feed(chunk)
                elif event[0] == Opcode.CLOSE:
                    nursery.cancel_scope.cancel()
                    return parse_close(event[1])[0]
    raise AssertionError("unreachable")  # pragma: no cover


def _fragment_flood(payload: bytes, frames: int) -> bytes:
    """The start of one text message followed by ``frames`` continuation frames."""
    return _frame(Opcode.TEXT, b"{", fin=False) + _frame(
        Opcode.CONTINUATION, payload, fin=False
    ) * (frames)


FLOODS = {
    # 2-byte fragments (each costs a frame parse) and empty ones (which never reach the byte
    # limit): both far past the frame limit.
    "2-byte-fragments": (_fragment_flood(b"ab", 5 * MAX_MESSAGE_FRAMES), POLICY_VIOLATION),
    "empty-continuations": (_fragment_flood(b"", 5 * MAX_MESSAGE_FRAMES), POLICY_VIOLATION),
    # Pings between the fragments: each is answered, and each counts as a frame of the message.
    "pings-between-fragments": (
        _frame(Opcode.TEXT, b"{", fin=False) + _frame(Opcode.PING, b"p") * 2 * MAX_MESSAGE_FRAMES,
        POLICY_VIOLATION,
    ),
    # Few frames, too many bytes: the byte limit.
    "big-fragments": (_fragment_flood(b"x" * 32 * 1024, 8), MESSAGE_TOO_BIG),
}


async def _served_during(
    client: iii_trio.Worker,
    attack: Callable[[], Awaitable[None]],
    *,
    per_call: float,
    at_least: int = 0,
) -> int:
    """Run ``attack()`` while ``client`` keeps calling ``good::echo``, each call answered
    within ``per_call`` seconds; calls go on after the attack until ``at_least`` were made.
    Returns the number of calls."""
    over = trio.Event()
    calls = 0

    async def run_attack() -> None:
        await attack()
        over.set()

    async def call_meanwhile() -> None:
        nonlocal calls
        while not over.is_set() or calls < at_least:
            with trio.fail_after(per_call):  # every single call is served within this
                assert await client.trigger("good::echo", {"n": calls}) == calls
            calls += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_attack)
        nursery.start_soon(call_meanwhile)
    return calls


@pytest.mark.parametrize("kind", list(FLOODS))
async def test_fragment_floods_are_cut_off_while_others_are_served(kind: str) -> None:
    flood, expected_code = FLOODS[kind]
    rounds = 20  # floods, three at a time
    async with (
        iii_trio.open_engine(port=0, max_message_size=128 * 1024) as engine,
        iii_trio.connect_worker(engine.url, name="server") as server,
        iii_trio.connect_worker(engine.url, name="client") as client,
    ):
        server.register_function("good::echo", lambda p: p["n"])
        await engine.wait_function("good::echo")
        codes: list[int] = []

        async def attacker(count: int) -> None:
            for _ in range(count):
                codes.append(await _attack(engine.port, flood))

        async def attack() -> None:
            async with trio.open_nursery() as attackers:
                for _ in range(3):
                    attackers.start_soon(attacker, rounds // 3 + 1)

        with trio.fail_after(60):
            calls = await _served_during(client, attack, per_call=5)
        assert codes == [expected_code] * len(codes)
        assert calls >= 1
        # ...and the engine still serves a fresh worker.
        with trio.fail_after(10):
            async with iii_trio.connect_worker(engine.url, name="after") as after:
                assert await after.trigger("good::echo", {"n": -1}) == -1


# --- absurd integers ---------------------------------------------------------------------------


def _invoke(function_id: str, timeout_ms: str, invocation_id: str | None) -> str:
    fields = f'"type":"invokefunction","function_id":"{function_id}","data":{{}}'
    if invocation_id is not None:
        fields += f',"invocation_id":"{invocation_id}"'
    return "{" + fields + f',"timeout_ms":{timeout_ms}' + "}"


@pytest.mark.parametrize(
    "timeout_ms", ["1" + "0" * 400, str(MAX_TIMEOUT_MS + 1), "-1"], ids=["1e400", "2**53", "-1"]
)
async def test_absurd_timeout_ms_gets_invalid_message(iii_engine, raw, timeout_ms: str) -> None:
    executor = await raw()
    await executor.send(RegisterFunction(id="num::f"))
    await iii_engine.wait_function("num::f")
    caller = await raw()
    with trio.fail_after(10):
        # With an invocation id: an error result for that call.
        call_id = new_id()
        await caller.send(_invoke("num::f", timeout_ms, call_id))
        result = await caller.expect(InvocationResult)
        assert result.invocation_id == call_id
        assert result.error is not None and result.error.code == "invalid_message"
        assert "timeout_ms" in result.error.message
        # Without one: an error message.
        await caller.send(_invoke("num::f", timeout_ms, None))
        error = await caller.expect(Error)
        assert error.error.code == "invalid_message"
        # The connection stays open and serves the next call, at the largest deadline allowed.
        call_id = new_id()
        await caller.send(_invoke("num::f", str(MAX_TIMEOUT_MS), call_id))
        forwarded = await executor.expect(InvokeFunction)
        assert forwarded.timeout_ms == int(iii_engine.config.max_invocation_timeout * 1000)
        await executor.send(
            InvocationResult(invocation_id=forwarded.invocation_id, function_id="num::f", result=7)
        )
        result = await caller.expect(InvocationResult)
        assert (result.invocation_id, result.result, result.error) == (call_id, 7, None)


async def test_absurd_buffer_size_is_clamped(iii_engine, raw) -> None:
    caller = await raw()
    with trio.fail_after(10):
        for size in ("1" + "0" * 400, "-" + "9" * 400):
            call_id = new_id()
            await caller.send(
                '{"type":"invokefunction","function_id":"engine::channels::create",'
                f'"invocation_id":"{call_id}","data":{{"buffer_size":{size}}}}}'
            )
            result = await caller.expect(InvocationResult)
            assert result.error is None and isinstance(result.result, dict)
            assert set(result.result) == {"writer", "reader"}
        await caller.send(Ping())
        assert isinstance(await caller.expect(Pong), Pong)


# --- parse bombs (issue 14) ------------------------------------------------------------------

BOMB_BYTES = 8 * 1024 * 1024  # 27x this in Python objects, and ~1.4 s of parsing, before


def _bomb(size: int) -> str:
    """``[[],[],...]``: one empty list per 3 bytes, the densest JSON there is."""
    return "[" + "[]," * (size // 3) + "[]]"


BOMBS = {
    # Where the engine would never parse it anyway (skipped unparsed), in a field it stores,
    # and in a call's payload, which it relays as text: refused before any parsing each time.
    "unknown-field": lambda: '{"type":"ping","x":' + _bomb(BOMB_BYTES) + "}",
    "metadata": lambda: (
        '{"type":"registerfunction","id":"bomb::f","metadata":' + _bomb(BOMB_BYTES) + "}"
    ),
    "call-data": lambda: (
        '{"type":"invokefunction","function_id":"good::echo","invocation_id":"'
        + new_id()
        + '","data":'
        + _bomb(BOMB_BYTES)
        + "}"
    ),
}


@pytest.mark.parametrize("where", list(BOMBS))
async def test_parse_bombs_are_refused_while_others_are_served(where: str) -> None:
    bomb = BOMBS[where]()
    async with (
        iii_trio.open_engine(port=0) as engine,
        iii_trio.connect_worker(engine.url, name="server") as server,
        iii_trio.connect_worker(engine.url, name="client") as client,
    ):
        server.register_function("good::echo", lambda p: p["n"])
        await engine.wait_function("good::echo")
        attacker = await RawClient.connect(engine.url)

        async def attack() -> None:
            await attacker.send(bomb)
            # An error message (a refused message over 1 MiB is not searched for a call id).
            body = (await attacker.expect(Error)).error
            assert body is not None and body.code == "invalid_message"
            assert "too dense" in body.message

        with trio.fail_after(30):
            # The process's own peak since just now (ru_maxrss would keep any earlier test's).
            with PeakRss(os.getpid()) as peak:
                await _served_during(client, attack, per_call=2, at_least=3)
            # The attacker's connection still works, and nothing of the bomb was kept.
            await attacker.send(Ping())
            assert isinstance(await attacker.expect(Pong), Pong)
        await attacker.aclose()
        assert engine.statistics().functions == 1
        # The engine runs in this process: its peak grew by a few copies of the message at
        # most (the bomb would have taken 27 times its size once parsed).
        assert peak.growth_mib < 12 * BOMB_BYTES / 2**20, peak.growth_mib


async def test_a_dense_call_under_1_mib_gets_an_error_result(iii_engine, raw) -> None:
    caller = await raw()
    call_id = new_id()
    with trio.fail_after(10):
        await caller.send(
            '{"type":"invokefunction","function_id":"good::echo","invocation_id":"'
            + call_id
            + '","data":'
            + _bomb(256 * 1024)
            + "}"
        )
        result = await caller.expect(InvocationResult)
    assert result.invocation_id == call_id
    assert result.error is not None and result.error.code == "invalid_message"
    assert "too dense" in result.error.message


async def test_dense_data_is_data_not_a_bomb(iii_engine, raw) -> None:
    """An array of numbers is as dense as JSON gets short of a bomb. Sent the ways the engine
    does not relay as text (a void call; metadata; a payload naming a number that looks out
    of range), it reaches the function whole."""
    numbers = list(range(100_000))  # ~590 KB of JSON, one value per 6 bytes
    send, received = trio.open_memory_channel[list[int]](10)
    async with iii_trio.connect_worker(iii_engine.url, name="server") as server:

        async def take(payload: dict[str, object]) -> int:
            value = payload["n"]
            assert isinstance(value, list)
            await send.send(value)
            return len(value)

        server.register_function("data::take", take)
        await iii_engine.wait_function("data::take")
        with trio.fail_after(10):
            await server.trigger("data::take", {"n": numbers}, action="void")
            assert await received.receive() == numbers
            caller = await raw()
            call_id = new_id()
            data = json.dumps({"n": numbers, "note": "not a number: 1e999"})
            await caller.send(
                '{"type":"invokefunction","function_id":"data::take","invocation_id":"'
                + call_id
                + '","metadata":{"tags":[1,2,3]},"data":'
                + data
                + "}"
            )
            result = await caller.expect(InvocationResult)
            assert result.error is None and result.result == len(numbers)
            assert await received.receive() == numbers


# --- out of file descriptors -------------------------------------------------------------------

_ENGINE_AT_FD_LIMIT = textwrap.dedent(
    """
    import logging, os, resource, sys
    import trio, iii_trio

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")

    async def main():
        async with iii_trio.open_engine(port=0, handshake_timeout=60) as engine:
            used = len(os.listdir("/proc/self/fd"))
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (used + 20, hard))
            print(engine.port, flush=True)
            await trio.sleep_forever()

    trio.run(main)
    """
)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
async def test_engine_at_its_descriptor_limit() -> None:
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-c", _ENGINE_AT_FD_LIMIT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    log = bytearray()
    log_changed = trio.Event()
    held: list[trio.SocketStream] = []

    async def collect_log() -> None:
        nonlocal log_changed
        assert proc.stderr is not None
        while chunk := await proc.stderr.receive_some():
            log.extend(chunk)
            log_changed.set()
            log_changed = trio.Event()

    async def wait_for_log(text: bytes) -> None:
        while text not in log:
            await log_changed.wait()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect_log)
            with trio.fail_after(30):
                line = b""
                while not line.endswith(b"\n"):
                    chunk = await proc.stdout.receive_some()
                    assert chunk, f"engine exited early: {bytes(log).decode()}"
                    line += chunk
                port = int(line)
                # 20 descriptors left: 40 connections wait in the backlog, half accepted.
                for _ in range(40):
                    held.append(await trio.open_tcp_stream("127.0.0.1", port))
                await wait_for_log(b"cannot accept connections: EMFILE")
                # Not for ordering: the outage lasts a while, so that accept() fails again
                # and again (every 0.1 s), which trio's serve_listeners logged each time.
                await trio.sleep(1.5)
                for stream in held:
                    await stream.aclose()
                held.clear()
                await wait_for_log(b"accepting connections again")
                # A new worker connects and is served.
                async with iii_trio.connect_worker(f"ws://127.0.0.1:{port}", name="late") as w:
                    assert isinstance(await w.trigger("engine::functions::list", {}), dict)
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            for stream in held:
                await trio.aclose_forcefully(stream)
            proc.kill()
            await proc.wait()
            await proc.stdout.aclose()
            await proc.stderr.aclose()
    text = bytes(log).decode()
    warnings = [line for line in text.splitlines() if "cannot accept connections" in line]
    assert 1 <= len(warnings) <= 2, text
    assert all(line.startswith("WARNING ") for line in warnings), text
    assert "Traceback" not in text and "ERROR" not in text, text
