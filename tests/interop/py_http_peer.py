"""HTTP interop peer built on the official Python SDK (PyPI iii-sdk 0.25.0, import `iii`).

usage: python tests/interop/py_http_peer.py --url URL --prefix P

Registers five functions and binds them with the ``http`` trigger type, then prints
{"event":"ready"} and serves until stdin reaches EOF or SIGTERM/SIGINT:

* ``GET P/json``: returns ``{"status_code": 200, "body": {"sdk": "py", "query": ...}}``;
* ``POST P/upload``: reads ``request_body`` to its end with the SDK's reader and answers
  through ``response`` with ``{"size", "sha256"}`` as JSON;
* ``GET P/download?size=N``: streams N DATA PATTERN bytes (see pattern.py) through
  ``response``, ``content-type: application/octet-stream``;
* ``GET P/sse``: three Server-Sent Events, ``text/event-stream``;
* ``GET P/guarded``: route middleware ``P::mw`` answers 403 when the request has an
  ``x-deny`` header, else lets the handler answer ``{"guarded": "passed"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
from typing import Any

from iii import InitOptions, register_worker
from iii.types import StreamRequest, StreamResponse
from iii_helpers.http import http
from pattern import pattern_chunks  # type: ignore[import-not-found]  # run as a script
from peer_stop import wait_for_stop  # type: ignore[import-not-found]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--prefix", required=True)
    args = parser.parse_args()
    p = args.prefix
    iii = register_worker(args.url, InitOptions(worker_name=f"{p}-py-http"))

    def json_route(data: Any) -> Any:
        return {"status_code": 200, "body": {"sdk": "py", "query": data.get("query_params")}}

    @http
    async def upload(req: StreamRequest, response: StreamResponse) -> None:
        digest, size = hashlib.sha256(), 0
        async for chunk in req.request_body:
            digest.update(chunk)
            size += len(chunk)
        await response.status(200)
        await response.headers({"content-type": "application/json"})
        await response.writer.write(
            json.dumps({"size": size, "sha256": digest.hexdigest()}).encode()
        )
        await response.writer.close_async()

    @http
    async def download(req: StreamRequest, response: StreamResponse) -> None:
        await response.status(200)
        await response.headers({"content-type": "application/octet-stream"})
        for chunk in pattern_chunks(int(req.query_params["size"])):
            await response.writer.write(chunk)
        await response.writer.close_async()

    @http
    async def sse(req: StreamRequest, response: StreamResponse) -> None:
        await response.status(200)
        await response.headers({"content-type": "text/event-stream"})
        for n in range(3):
            await response.writer.write(f"id: {n}\ndata: tick {n}\n\n".encode())
            await asyncio.sleep(0.02)
        await response.writer.close_async()

    def mw(data: Any) -> Any:
        if "x-deny" in data["request"]["headers"]:
            return {"action": "respond", "response": {"status_code": 403, "body": {"denied": True}}}
        return {"action": "continue"}

    def guarded(data: Any) -> Any:
        return {"status_code": 200, "body": {"guarded": "passed"}}

    iii.register_function(f"{p}::mw", mw)
    for name, fn, method, extra in [
        ("json", json_route, "GET", {}),
        ("upload", upload, "POST", {}),
        ("download", download, "GET", {}),
        ("sse", sse, "GET", {}),
        ("guarded", guarded, "GET", {"middleware_function_ids": [f"{p}::mw"]}),
    ]:
        iii.register_function(f"{p}::{name}", fn)
        iii.register_trigger(
            {
                "type": "http",
                "function_id": f"{p}::{name}",
                "config": {"api_path": f"{p}/{name}", "http_method": method, **extra},
            }
        )
    sys.stdout.write(json.dumps({"event": "ready"}) + "\n")
    sys.stdout.flush()
    wait_for_stop()
    iii.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
