"""Hostile peers against a real engine on 127.0.0.1 (issue 14, "Hostile input, round 2"):
absurd integers in messages."""

from __future__ import annotations

import pytest
import trio

from iii_trio.protocol import (
    MAX_TIMEOUT_MS,
    Error,
    InvocationResult,
    InvokeFunction,
    Ping,
    Pong,
    RegisterFunction,
)
from tests.helpers import new_id

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
