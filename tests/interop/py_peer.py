"""Interop peer built on the official Python SDK (PyPI iii-sdk 0.25.0, import name `iii`).

usage: python tests/interop/py_peer.py --url ws://127.0.0.1:PORT --name NAME <mode> [options]
See tests/interop/README.md for the contract and NOTES.md for SDK quirks. stdout carries only
single-line JSON objects; logs go to stderr. Exit 0 = ok, 1 = failure reported as JSON, 2 = crash.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import sys
import traceback
from typing import Any

from iii import InitOptions, InvocationError, TriggerAction, register_worker
from iii.helpers import create_channel_async
from pattern import pattern_chunks  # type: ignore[import-not-found]  # run as a script
from peer_stop import stop_on_signals  # type: ignore[import-not-found]

PEER = "py"


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def failure(err: InvocationError) -> dict[str, Any]:
    return {"ok": False, "code": err.code, "message": err.message}


async def write_stream(writer: Any, size: int, messages: list[str]) -> str:
    """Messages, then `size` pattern bytes in 64 KiB writes, then a clean close; every step awaited.

    The SDK's fire-and-forget `send_message()`/`close()`/`stream.*` each spawn a task, and
    `close_async()` is a no-op while the socket is not connected (never opened, or still
    opening): with nothing written the Close would never be sent and the reader would hang.
    So: open the socket explicitly first (private `_ensure_connected`), await every send,
    then `close_async()` (which sleeps 10 ms, then sends Close 1000 and awaits the handshake).
    """
    await writer._ensure_connected()
    for msg in messages:
        await writer.send_message_async(msg)
    digest = hashlib.sha256()
    for chunk in pattern_chunks(size):
        await writer.write(chunk)
        digest.update(chunk)
    await writer.close_async()
    return digest.hexdigest()


async def read_stream(reader: Any) -> dict[str, Any]:
    """Read to EOF; text frames arrive through the (sync) on_message callback."""
    messages: list[str] = []
    reader.on_message(messages.append)
    digest, size = hashlib.sha256(), 0
    async for chunk in reader:  # opens the socket; any close (even abnormal) ends the loop
        digest.update(chunk)
        size += len(chunk)
    return {"size": size, "sha256": digest.hexdigest(), "messages": messages}


# ---- serve ----------------------------------------------------------------------------------


async def fn_echo(data: Any) -> Any:
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k != "_caller_worker_id"}
    return {"echo": data, "peer": PEER}


async def fn_fail(data: Any) -> Any:
    raise RuntimeError("boom: " + str(data["why"]))


async def fn_sink(data: Any) -> Any:
    return await read_stream(data["reader"])


async def fn_source(data: Any) -> Any:
    size = int(data["size"])
    sha = await write_stream(data["writer"], size, list(data.get("messages") or []))
    return {"size": size, "sha256": sha}


async def fn_slow(data: Any) -> Any:
    await asyncio.sleep(data["ms"] / 1000)
    return {"slept": data["ms"]}


def serve(iii: Any, args: argparse.Namespace) -> int:
    """Run until stdin reaches EOF or SIGTERM/SIGINT arrives (see peer_stop.py)."""
    with stop_on_signals():
        p = args.prefix
        for suffix, fn in [
            ("echo", fn_echo),
            ("fail", fn_fail),
            ("sink", fn_sink),
            ("source", fn_source),
            ("slow", fn_slow),
        ]:
            iii.register_function(f"{p}::{suffix}", fn)
        # Readiness barrier: registerfunction has no ack, so call our own echo through the
        # engine (dispatch="remote" bypasses 0.25.0's in-process local dispatch). Once it
        # answers, the engine has processed the registrations sent before it on this socket.
        try:
            iii.trigger(
                {
                    "function_id": f"{p}::echo",
                    "payload": {"ready_probe": True},
                    "dispatch": "remote",
                    "timeout_ms": args.timeout_ms or 10000,
                }
            )
        except InvocationError as err:
            emit({"event": "error", **failure(err)})
            return 1
        emit({"event": "ready"})
        while os.read(0, 65536):
            pass
    return 0


# ---- client modes ---------------------------------------------------------------------------


def trigger_request(args: argparse.Namespace, function_id: str, payload: Any) -> dict[str, Any]:
    req: dict[str, Any] = {"function_id": function_id, "payload": payload}
    if args.timeout_ms:
        req["timeout_ms"] = args.timeout_ms
    return req


async def call(iii: Any, args: argparse.Namespace) -> int:
    req = trigger_request(args, args.function, args.payload)
    if args.void:
        req["action"] = TriggerAction.Void()
    try:
        result = await iii.trigger_async(req)
    except InvocationError as err:
        emit(failure(err))
        return 1
    emit({"ok": True, "result": result})
    return 0


async def with_channel(iii: Any, args: argparse.Namespace, push: bool) -> int:
    messages = json.loads(args.messages)
    channel = await create_channel_async(iii)
    local: asyncio.Task[Any]
    if push:
        local = asyncio.create_task(write_stream(channel.writer, args.size, messages))
        payload = {"reader": channel.reader_ref.model_dump()}
    else:
        local = asyncio.create_task(read_stream(channel.reader))
        payload = {
            "writer": channel.writer_ref.model_dump(),
            "size": args.size,
            "messages": messages,
        }
    try:
        result = await iii.trigger_async(trigger_request(args, args.function, payload))
    except InvocationError as err:
        local.cancel()
        emit(failure(err))
        return 1
    done = await local
    extra: dict[str, Any] = {"sha256": done} if push else done
    emit({"ok": True, "result": result, **extra})
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--url", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("mode", choices=["serve", "call", "push", "pull"])
    ap.add_argument("--prefix")
    ap.add_argument("--function")
    ap.add_argument("--payload", default="null")
    ap.add_argument("--timeout-ms", type=int)
    ap.add_argument("--void", action="store_true")
    ap.add_argument("--size", type=int, default=0)
    ap.add_argument("--messages", default="[]")
    args = ap.parse_args()
    if (args.mode == "serve") != bool(args.prefix) or (args.mode != "serve" and not args.function):
        ap.error("serve needs --prefix; call/push/pull need --function")
    if args.payload.startswith("@"):  # @PATH: JSON from a file (one argv string is <= 128 KiB)
        with open(args.payload[1:], encoding="utf-8") as f:
            args.payload = f.read()
    args.payload = json.loads(args.payload)
    logging.basicConfig(
        stream=sys.stderr,
        level=os.environ.get("PEER_LOG_LEVEL", "WARNING"),
        format=f"[{PEER}-peer %(name)s] %(levelname)s %(message)s",
    )
    os.environ.pop("III_WORKER_NAME", None)  # the SDK lets it override worker_name
    iii = register_worker(args.url, InitOptions(worker_name=args.name, otel={"enabled": False}))
    try:
        if args.mode == "serve":
            return serve(iii, args)
        if args.mode == "call":
            return asyncio.run(call(iii, args))
        return asyncio.run(with_channel(iii, args, push=args.mode == "push"))
    finally:
        iii.shutdown()


if __name__ == "__main__":
    try:
        code = main()
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        code = 2
    sys.exit(code)
