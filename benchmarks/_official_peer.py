"""Workers built on the official Python SDK (``iii-sdk`` 0.25.0, import name ``iii``).

usage: python -m benchmarks._official_peer ROLE --url URL

* ``serve``: serves ``bench::sink`` (reads a channel to its end, checking the data).
* ``client``: answers ``transfer`` commands (one channel to ``bench::sink``), one JSON line
  in, one out.

The SDK runs its own event loop on a thread; handlers run there. The client runs each
transfer in ``asyncio.run`` on the main thread, so the channel's writer socket lives on that
loop. See tests/interop/NOTES.md for the SDK's quirks (``shutdown()`` is required to exit).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import traceback
from typing import Any

from iii import InitOptions, register_worker
from iii.helpers import create_channel_async

from ._common import Verifier, chunks, emit, now


async def sink(data: dict[str, Any]) -> dict[str, Any]:
    reader = data["reader"]
    verifier = Verifier(int(data["chunk"]))
    async for piece in reader:  # any close ends the loop: the size tells a truncation
        verifier.feed(piece)
    return {"t_eof": now(), **verifier.report()}


async def transfer(iii: Any, cmd: dict[str, Any]) -> dict[str, Any]:
    size, chunk = int(cmd["size"]), int(cmd["chunk"])
    data = chunks(size, chunk)
    channel = await create_channel_async(iii)
    request = {
        "function_id": cmd["fn"],
        "payload": {"reader": channel.reader_ref.model_dump(), "chunk": chunk},
        "timeout_ms": int(cmd["timeout"] * 1000),
    }
    call = asyncio.create_task(iii.trigger_async(request))
    writer = channel.writer
    t0 = now()
    for piece in data:
        await writer.write(piece)
    await writer.close_async()  # sleeps 10 ms, then Close 1000 (the SDK's own way)
    t_sent = now()
    result: dict[str, Any] = await call
    return {"t0": t0, "t_sent": t_sent, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("role", choices=["serve", "client"])
    parser.add_argument("--url", required=True)
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    os.environ.pop("III_WORKER_NAME", None)  # it would override worker_name
    iii = register_worker(
        args.url, InitOptions(worker_name=f"bench-official-{args.role}", otel={"enabled": False})
    )
    try:
        if args.role == "serve":
            iii.register_function("bench::sink", sink)
            # registerfunction has no ack: a call through the engine to a function registered
            # after it proves the engine has processed it ("dispatch": "remote" skips the
            # SDK's in-process shortcut).
            iii.register_function("bench::ping", _ping)
            iii.trigger({"function_id": "bench::ping", "payload": {}, "dispatch": "remote"})
            emit({"event": "ready"})
            while os.read(0, 65536):
                pass
        else:
            emit({"event": "ready"})
            for line in sys.stdin:
                cmd = json.loads(line)
                try:
                    result = asyncio.run(transfer(iii, cmd))
                except Exception as exc:
                    traceback.print_exc()
                    emit({"event": "error", "message": f"{type(exc).__name__}: {exc}"})
                else:
                    emit({"event": "result", **result})
    finally:
        iii.shutdown()


async def _ping(data: Any) -> dict[str, Any]:
    return {"ok": True}


if __name__ == "__main__":
    main()
