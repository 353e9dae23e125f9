"""Benchmark 6's processes: an HTTP server (the engine with an in-process worker handling the
routes, or the baseline: a plain h11 server doing the same work without the engine) and an
HTTP client that measures it.

    python -m benchmarks._http_proc serve {engine|baseline}
    python -m benchmarks._http_proc json URL --requests N --connections C
    python -m benchmarks._http_proc upload URL --size BYTES

The routes: ``POST /bench/json`` answers the request's JSON body inside ``{"echo": ...}``;
``POST /bench/upload`` reads the (streamed) body to its end and answers ``{"size": n}``.
Each process prints JSON lines (``ready`` with the URL; ``result``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any
from urllib.parse import urlsplit

import h11
import trio

import iii_trio

from ._common import emit, now

CHUNK = 64 * 1024
BODY = json.dumps({"source": "bench", "kind": "http", "value": 42}).encode()


async def serve_engine() -> None:
    async with (
        iii_trio.open_engine(port=0, http_port=0, http_max_body_size=1 << 40) as engine,
        iii_trio.connect_worker(engine.url, dialer=engine.local_dialer) as worker,
    ):

        async def echo(request: iii_trio.HttpRequest, response: iii_trio.HttpResponse) -> Any:
            return {"status_code": 200, "body": {"echo": request.json}}

        async def upload(request: iii_trio.HttpRequest, response: iii_trio.HttpResponse) -> Any:
            size = 0
            async for chunk in request.body:
                size += len(chunk)
            return {"status_code": 200, "body": {"size": size}}

        worker.register_http_route("bench::json", echo, api_path="bench/json", http_method="POST")
        worker.register_http_route("bench::up", upload, api_path="bench/upload", http_method="POST")
        http = engine._http
        assert http is not None
        with trio.fail_after(30):
            await engine.wait_until(lambda _: len(http.triggers.routes) >= 2)
        emit({"event": "ready", "url": engine.http_url})
        await trio.sleep_forever()


async def serve_baseline() -> None:
    async def handle(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = None
                body = bytearray()
                size = 0
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive_some(CHUNK))
                    elif isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.Data):
                        size += len(event.data)
                        if request is not None and request.target == b"/bench/json":
                            body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    else:
                        return
                assert request is not None
                if request.target == b"/bench/json":
                    answer = json.dumps({"echo": json.loads(body)}).encode()
                else:
                    answer = json.dumps({"size": size}).encode()
                headers = [
                    ("content-type", "application/json"),
                    ("content-length", str(len(answer))),
                ]
                await stream.send_all(
                    conn.send(h11.Response(status_code=200, headers=headers))
                    + conn.send(h11.Data(data=answer))
                    + conn.send(h11.EndOfMessage())
                )
                conn.start_next_cycle()
        except (trio.BrokenResourceError, h11.ProtocolError):
            pass

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handle, listeners)
        emit({"event": "ready", "url": f"http://127.0.0.1:{port}"})


async def _connect(url: str) -> tuple[trio.SocketStream, h11.Connection]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    return await trio.open_tcp_stream(parts.hostname, parts.port), h11.Connection(h11.CLIENT)


async def _answer(stream: trio.SocketStream, conn: h11.Connection) -> tuple[int, bytes]:
    status, body = 0, bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(CHUNK))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            conn.start_next_cycle()
            return status, bytes(body)
        else:
            raise RuntimeError(f"unexpected {event!r}")


async def run_json(url: str, requests: int, connections: int) -> dict[str, Any]:
    head = [("host", "bench"), ("content-type", "application/json")]
    head.append(("content-length", str(len(BODY))))
    request = h11.Request(method="POST", target="/bench/json", headers=head)
    per = requests // connections

    async def one() -> None:
        stream, conn = await _connect(url)
        async with stream:
            for _ in range(per):
                await stream.send_all(
                    conn.send(request)
                    + conn.send(h11.Data(data=BODY))
                    + conn.send(h11.EndOfMessage())
                )
                status, body = await _answer(stream, conn)
                if status != 200 or json.loads(body) != {"echo": json.loads(BODY)}:
                    raise RuntimeError(f"bad answer {status} {body[:200]!r}")

    t0 = now()
    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(one)
    elapsed = now() - t0
    return {"requests": per * connections, "elapsed": elapsed}


async def run_upload(url: str, size: int) -> dict[str, Any]:
    stream, conn = await _connect(url)
    block = bytes(range(256)) * (CHUNK // 256)
    head = [("host", "bench"), ("content-type", "application/octet-stream")]
    head.append(("content-length", str(size)))
    async with stream:
        t0 = now()
        await stream.send_all(
            conn.send(h11.Request(method="POST", target="/bench/upload", headers=head))
        )
        sent = 0
        while sent < size:
            piece = block[: min(CHUNK, size - sent)]
            await stream.send_all(conn.send(h11.Data(data=piece)))
            sent += len(piece)
        await stream.send_all(conn.send(h11.EndOfMessage()))
        status, body = await _answer(stream, conn)
        elapsed = now() - t0
    if status != 200 or json.loads(body) != {"size": size}:
        raise RuntimeError(f"bad answer {status} {body[:200]!r}")
    return {"size": size, "elapsed": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="mode", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("kind", choices=["engine", "baseline"])
    json_mode = sub.add_parser("json")
    json_mode.add_argument("url")
    json_mode.add_argument("--requests", type=int, default=2000)
    json_mode.add_argument("--connections", type=int, default=8)
    upload = sub.add_parser("upload")
    upload.add_argument("url")
    upload.add_argument("--size", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    if args.mode == "serve":
        trio.run(serve_engine if args.kind == "engine" else serve_baseline)
    elif args.mode == "json":
        emit({"event": "result", **trio.run(run_json, args.url, args.requests, args.connections)})
    else:
        emit({"event": "result", **trio.run(run_upload, args.url, args.size)})


if __name__ == "__main__":
    main()
