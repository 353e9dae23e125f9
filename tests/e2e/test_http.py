"""HTTP triggers end to end: a real engine with its HTTP server on 127.0.0.1, workers of our
SDK as handlers, and an h11 client (tests/http_client.py) that streams and checks bodies."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

import iii_trio
from iii_trio import HttpRequest, HttpResponse, open_engine
from iii_trio.worker import connect_worker
from tests.helpers import transport
from tests.http_client import HttpClient, Truncated, fetch, header
from tests.interop.pattern import BLOCK_SIZE, pattern_chunks, pattern_sha256

MiB = 1024 * 1024
BLOCK = os.urandom(MiB)


@pytest.fixture
async def engine() -> AsyncIterator[iii_trio.Engine]:
    async with open_engine(port=0, http_port=0, http_max_body_size=1024 * MiB) as engine:
        yield engine


async def _bind(engine: iii_trio.Engine, worker: iii_trio.Worker, n: int) -> None:
    with trio.fail_after(10):
        await engine.wait_until(lambda e: len(e._http.triggers.routes) >= n)  # type: ignore[union-attr]


async def _pattern(size: int) -> AsyncIterator[bytes]:
    """The interop data pattern (every 64 KiB block differs, so a block reordered, lost or
    repeated changes the sha256), in 1 MiB pieces."""
    pieces: list[bytes] = []
    for chunk in pattern_chunks(size):
        pieces.append(chunk)
        if len(pieces) == MiB // BLOCK_SIZE:
            yield b"".join(pieces)
            pieces = []
    if pieces:
        yield b"".join(pieces)


_sha = pattern_sha256


async def test_json_route_params_and_status(engine) -> None:
    async with connect_worker(engine.url, dialer=transport(engine)) as worker:

        async def get(data: dict[str, Any]) -> Any:
            assert "_caller_worker_id" not in data
            return {
                "status_code": 201,
                "headers": {"X-Id": data["path_params"]["id"]},
                "body": {"query": data["query_params"], "method": data["method"]},
            }

        worker.register_function("api::get", get)
        worker.register_trigger("http", "api::get", {"api_path": "/users/:id"})
        await _bind(engine, worker, 1)
        with trio.fail_after(10):
            response, body = await fetch(engine.http_url, "GET", "/users/42?a=1&a=2&b=x%20y")
            assert response.status_code == 201
            assert header(response, "x-id") == "42"
            assert json.loads(body) == {"query": {"a": "2", "b": "x y"}, "method": "GET"}
            response, body = await fetch(engine.http_url, "GET", "/nope")
            assert response.status_code == 404 and json.loads(body)["error"]["code"] == "NOT_FOUND"
            response, body = await fetch(engine.http_url, "DELETE", "/users/42")
            assert response.status_code == 405 and header(response, "allow") == "GET"
            response, body = await fetch(engine.http_url, "HEAD", "/users/42")
            assert response.status_code == 201 and body == b""
            response, _ = await fetch(
                engine.http_url,
                "OPTIONS",
                "/anything",
                headers=[("Origin", "http://x"), ("Access-Control-Request-Method", "PUT")],
            )
            assert response.status_code == 200
            assert header(response, "access-control-allow-origin") == "*"


async def test_a_result_too_dense_to_answer_gets_a_500_and_the_worker_lives(engine) -> None:
    """The engine parses a JSON route's result to answer HTTP: one over 1 MiB holding a value
    per 3 bytes is refused (docs/security.md), the client gets an error envelope, and the
    worker's connection is untouched."""
    async with connect_worker(engine.url, dialer=transport(engine)) as worker:

        async def dense(data: dict[str, Any]) -> Any:
            size = int(data["query_params"]["n"])
            return {"body": [1] * size}

        worker.register_function("api::dense", dense)
        worker.register_trigger("http", "api::dense", {"api_path": "/dense"})
        await _bind(engine, worker, 1)
        with trio.fail_after(20):
            response, body = await fetch(engine.http_url, "GET", f"/dense?n={MiB}")
            assert response.status_code == 500
            error = json.loads(body)["error"]
            assert error["code"] == "invalid_message" and "too dense" in error["message"]
            response, body = await fetch(engine.http_url, "GET", "/dense?n=100000")
            assert response.status_code == 200 and json.loads(body) == [1] * 100_000


async def test_a_full_channel_table_answers_503_and_requests_recover() -> None:
    # Every routed request needs two channels. When a worker holds all the engine may have
    # (max_channels), a request gets a 503 it can retry, never a connection cut without an
    # answer; once channels end, requests are served again. A refused client that never sends
    # its announced body holds no request slot (one slot here; a held slot would make every
    # later request wait the 60 s head timeout).
    async with open_engine(
        port=0, http_port=0, max_channels=3, http_max_requests=1, http_head_timeout=60
    ) as engine:
        async with connect_worker(engine.url, dialer=transport(engine)) as worker:
            worker.register_function("api::hi", lambda data: {"status_code": 200, "body": "hi"})
            worker.register_trigger("http", "api::hi", {"api_path": "/hi"})
            await _bind(engine, worker, 1)
            with trio.fail_after(10):
                async with contextlib.AsyncExitStack() as held:
                    for _ in range(3):  # both ends in use, so the block's end ends them
                        channel = await held.enter_async_context(worker.open_channel())
                        await channel.writer.send_all(b"x")
                        assert await channel.reader.receive_some() == b"x"
                    with pytest.raises(iii_trio.InvocationError, match="max_channels"):
                        await worker.create_channel()
                    silent = await HttpClient.connect(engine.http_url)
                    await silent.stream.send_all(
                        b"GET /hi HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
                    )
                    assert b" 503 " in await silent.stream.receive_some(4096)
                    for _ in range(2):  # and the connection serves the next request too
                        response, body = await fetch(engine.http_url, "GET", "/hi")
                        assert response.status_code == 503
                        assert header(response, "retry-after") == "1"
                        error = json.loads(body)["error"]
                        assert error["code"] == "CHANNEL_LIMIT", error
                        assert "max_channels" in error["message"]
                    assert engine.statistics().channels == 3  # the refusal held none
                await engine.wait_until(lambda e: e.statistics().channels == 0)
                response, body = await fetch(engine.http_url, "GET", "/hi")
                assert response.status_code == 200 and json.loads(body) == "hi"
                await silent.aclose()


async def test_json_body_and_error_envelope(engine) -> None:
    async with connect_worker(engine.url, dialer=transport(engine)) as worker:

        async def echo(request: HttpRequest, response: HttpResponse) -> Any:
            raw = await request.read_all()
            if request.json == {"fail": True}:
                raise RuntimeError("boom")
            return {"body": {"parsed": request.json, "raw": raw.decode()}}

        worker.register_http_route("api::echo", echo, api_path="echo", http_method="post")
        await _bind(engine, worker, 1)
        with trio.fail_after(10):
            payload = json.dumps({"z": 2, "a": [1] * 30000}).encode()
            response, body = await fetch(
                engine.http_url,
                "POST",
                "/echo",
                headers=[("content-type", "application/json")],
                body=payload,
            )
            assert response.status_code == 200
            assert json.loads(body)["raw"].encode() == payload
            assert json.loads(body)["parsed"]["z"] == 2
            response, body = await fetch(
                engine.http_url,
                "POST",
                "/echo",
                headers=[("content-type", "application/json")],
                body=b'{"fail": true}',
            )
            error = json.loads(body)["error"]
            assert response.status_code == 500 and error["code"] == "invocation_failed"
            assert "boom" in error["message"] and error["error_id"]


async def test_streamed_upload_and_download_256mib(engine) -> None:
    size = 256 * MiB
    async with connect_worker(engine.url, dialer=transport(engine)) as worker:

        async def upload(request: HttpRequest, response: HttpResponse) -> Any:
            digest, got = hashlib.sha256(), 0
            async for chunk in request.body:
                digest.update(chunk)
                got += len(chunk)
            return {"body": {"size": got, "sha256": digest.hexdigest()}}

        async def download(request: HttpRequest, response: HttpResponse) -> None:
            await response.set_headers({"content-type": "application/octet-stream"})
            async for piece in _pattern(int(request.query_params["size"])):
                await response.send_all(piece)

        worker.register_http_route("files::up", upload, api_path="up", http_method="POST")
        worker.register_http_route("files::down", download, api_path="down")
        await _bind(engine, worker, 2)
        config = engine.config
        with trio.fail_after(120):
            async with await HttpClient.connect(engine.http_url) as client:
                await client.send_request(
                    "POST",
                    "/up",
                    [("content-type", "application/octet-stream")],
                    _pattern(size),
                    length=size,
                )
                response = await client.response()
                assert response.status_code == 200
                assert json.loads(await client.body()) == {"size": size, "sha256": _sha(size)}
                client.next_cycle()  # the same connection serves the download
                await client.send_request("GET", f"/down?size={size}")
                response = await client.response()
                assert response.status_code == 200
                assert header(response, "transfer-encoding") == "chunked"
                digest, got = hashlib.sha256(), 0
                async for chunk in client.chunks():
                    digest.update(chunk)
                    got += len(chunk)
                assert (got, digest.hexdigest()) == (size, _sha(size))
        stats = engine.statistics()
        assert stats.channel_buffered_peak <= config.channel_buffer_bytes + config.max_channel_frame
        await engine.wait_until(lambda e: e.statistics().channels == 0)


async def test_client_lost_mid_upload_is_channel_lost(engine) -> None:
    outcome: list[BaseException] = []
    received = trio.Event()
    async with connect_worker(engine.url, dialer=transport(engine)) as worker:

        async def upload(request: HttpRequest, response: HttpResponse) -> None:
            try:
                async for _chunk in request.body:
                    received.set()
            except Exception as exc:
                outcome.append(exc)
                raise

        worker.register_http_route("files::up", upload, api_path="up", http_method="PUT")
        await _bind(engine, worker, 1)
        with trio.fail_after(20):
            client = await HttpClient.connect(engine.http_url)

            async def first_half() -> AsyncIterator[bytes]:
                yield BLOCK
                yield BLOCK

            await client.send_request("PUT", "/up", [], first_half(), length=10 * MiB)
            await received.wait()
            await client.aclose()  # gone, 8 MiB short
            await engine.wait_until(lambda e: e.statistics().invocations == 0)
    assert len(outcome) == 1 and isinstance(outcome[0], iii_trio.ChannelLost)


async def test_handler_failure_mid_download_aborts_the_response(engine) -> None:
    async with connect_worker(engine.url, dialer=transport(engine)) as worker:

        async def download(request: HttpRequest, response: HttpResponse) -> None:
            await response.send_all(BLOCK)
            raise RuntimeError("disk on fire")

        worker.register_http_route("files::down", download, api_path="down")
        await _bind(engine, worker, 1)
        with trio.fail_after(20):
            async with await HttpClient.connect(engine.http_url) as client:
                await client.send_request("GET", "/down")
                response = await client.response()
                assert response.status_code == 200
                got = 0
                with pytest.raises(Truncated):
                    async for chunk in client.chunks():
                        got += len(chunk)
                assert got <= len(BLOCK)


async def test_sse_events_are_flushed_one_by_one(engine) -> None:
    next_event = trio.Event()
    async with connect_worker(engine.url, dialer=transport(engine)) as worker:

        async def events(request: HttpRequest, response: HttpResponse) -> None:
            nonlocal next_event
            await response.set_headers({"content-type": "text/event-stream"})
            for n in range(3):
                await response.send_event(f"tick {n}\nline two", event="tick", id=str(n))
                await next_event.wait()
                next_event = trio.Event()

        worker.register_http_route("sse::ticks", events, api_path="ticks")
        await _bind(engine, worker, 1)
        with trio.fail_after(20):
            async with await HttpClient.connect(engine.http_url) as client:
                await client.send_request("GET", "/ticks")
                response = await client.response()
                assert header(response, "content-type") == "text/event-stream"
                seen = []
                async for chunk in client.chunks():
                    seen.append(chunk.decode())
                    next_event.set()  # the handler sends the next one only now
                assert seen == [
                    f"id: {n}\nevent: tick\ndata: tick {n}\ndata: line two\n\n" for n in range(3)
                ]


async def test_backpressure_bounds_engine_memory() -> None:
    size = 64 * MiB
    buffer = MiB
    async with (
        open_engine(
            port=0, http_port=0, channel_buffer_bytes=buffer, http_max_body_size=size
        ) as engine,
        connect_worker(engine.url, dialer=transport(engine)) as worker,
    ):
        lag: list[int] = []
        box: dict[str, HttpClient] = {}

        async def slow(request: HttpRequest, response: HttpResponse) -> Any:
            got = 0
            async for chunk in request.body:
                got += len(chunk)
                lag.append(box["client"].sent - got)
                await trio.sleep(0.001)
            return {"body": {"size": got}}

        worker.register_http_route("files::slow", slow, api_path="slow", http_method="POST")
        await _bind(engine, worker, 1)
        with trio.fail_after(120):
            async with await HttpClient.connect(engine.http_url) as client:
                box["client"] = client
                await client.send_request("POST", "/slow", [], _pattern(size), length=size)
                response = await client.response()
                assert response.status_code == 200
                assert json.loads(await client.body()) == {"size": size}
        stats = engine.statistics()
        # The engine held at most the channel's own bound (plus one frame) ...
        assert stats.channel_buffered_peak <= buffer + 64 * 1024
        # ... and the client was held back: it was never more than socket buffers, the
        # in-process pipe and the channel ahead of the handler, far below the 64 MiB.
        assert max(lag) < 24 * MiB


async def test_middleware_condition_and_route_conflict(engine) -> None:
    calls: list[str] = []
    async with connect_worker(engine.url, dialer=transport(engine)) as worker:

        async def allow(data: dict[str, Any]) -> Any:
            calls.append("allow")
            assert data["phase"] == "preHandler"
            assert data["request"]["path_params"] in ({"id": "7"}, {})
            return {"action": "continue"}

        async def deny(data: dict[str, Any]) -> Any:
            calls.append("deny")
            return {"action": "respond", "response": {"status_code": 403, "body": {"no": 1}}}

        async def condition(data: dict[str, Any]) -> Any:
            return data["query_params"].get("ok") == "1"

        async def handler(data: dict[str, Any]) -> Any:
            calls.append("handler")
            return {"body": "ok"}

        for name, fn in [("mw::allow", allow), ("mw::deny", deny), ("api::c", condition)]:
            worker.register_function(name, fn)
        worker.register_function("api::h", handler)
        worker.register_trigger(
            "http",
            "api::h",
            {
                "api_path": "a/:id",
                "middleware_function_ids": ["mw::allow"],
                "condition_function_id": "api::c",
            },
        )
        worker.register_trigger(
            "http",
            "api::h",
            {"api_path": "b", "middleware_function_ids": ["mw::allow", "mw::deny"]},
        )
        clash = worker.register_trigger("http", "api::h", {"api_path": "a/:other"})
        with trio.fail_after(10):
            error = await clash.wait_failed()
            assert "conflicts with already-registered route 'GET a/:id'" in error.message
            await _bind(engine, worker, 2)
            response, body = await fetch(engine.http_url, "GET", "/a/7?ok=1")
            assert (response.status_code, json.loads(body)) == (200, "ok")
            response, body = await fetch(engine.http_url, "GET", "/a/7")
            assert response.status_code == 422
            assert json.loads(body)["error"]["code"] == "CONDITION_NOT_MET"
            calls.clear()
            response, body = await fetch(engine.http_url, "GET", "/b")
            assert (response.status_code, json.loads(body)) == (403, {"no": 1})
            assert calls == ["allow", "deny"]


@pytest.mark.parametrize("body", [b'{"a": NaN}', b'{"a": Infinity}', b'{"a": "\\ud800"}'])
async def test_a_json_body_iii_would_refuse_reaches_the_handler_as_null(
    engine, caplog: pytest.LogCaptureFixture, body: bytes
) -> None:
    # Python's json takes NaN and lone surrogates; the wire cannot carry them. The body is
    # then not valid JSON for the handler (null, its bytes still on the stream), and the
    # request is answered at once, not after the call's deadline.
    async with connect_worker(engine.url, dialer=transport(engine)) as worker:

        async def handler(request: HttpRequest, response: HttpResponse) -> Any:
            return {"body": {"json": request.json, "raw": len(await request.read_all())}}

        worker.register_http_route("api::strict", handler, api_path="strict", http_method="POST")
        await _bind(engine, worker, 1)
        with trio.fail_after(10):
            response, answer = await fetch(
                engine.http_url,
                "POST",
                "/strict",
                headers=[("content-type", "application/json")],
                body=body,
            )
    assert response.status_code == 200, answer
    assert json.loads(answer) == {"json": None, "raw": len(body)}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_header_value_http_cannot_carry_is_dropped_not_fatal(
    engine, caplog: pytest.LogCaptureFixture
) -> None:
    async with connect_worker(engine.url, dialer=transport(engine)) as worker:

        async def handler(data: dict[str, Any]) -> Any:
            return {"headers": {"X-Name": "caf\u00e9", "X-Ok": "1"}, "body": "hi"}

        worker.register_function("api::hdr", handler)
        worker.register_trigger("http", "api::hdr", {"api_path": "/hdr"})
        await _bind(engine, worker, 1)
        with trio.fail_after(10):
            response, body = await fetch(engine.http_url, "GET", "/hdr")
    assert response.status_code == 200 and json.loads(body) == "hi"
    assert header(response, "x-ok") == "1" and header(response, "x-name") is None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_malformed_body_on_an_unrouted_path_ends_quietly(
    engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    host, port = engine.http_url.removeprefix("http://").split(":")
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(host, int(port))
        await stream.send_all(
            b"POST /nope HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n"
        )
        assert (await stream.receive_some(1000)).startswith(b"HTTP/1.1 404 ")
        while await stream.receive_some(1000):  # the engine closes the connection
            pass
        await stream.aclose()
    assert "bad HTTP request body" in caplog.text
    for record in caplog.records:
        assert record.exc_info is None and record.levelno < logging.WARNING, record.getMessage()


async def test_hostile_requests(engine) -> None:
    async with connect_worker(engine.url, dialer=transport(engine)) as worker:

        async def echo(request: HttpRequest, response: HttpResponse) -> Any:
            return {"body": len(await request.read_all())}

        worker.register_http_route("api::echo", echo, api_path="echo", http_method="POST")
        await _bind(engine, worker, 1)
        host, port = engine.http_url.removeprefix("http://").split(":")
        with trio.fail_after(30):
            # A head over 16 KiB: 431.
            stream = await trio.open_tcp_stream(host, int(port))
            await stream.send_all(
                b"GET / HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 20000 + b"\r\n\r\n"
            )
            assert (await stream.receive_some(1000)).startswith(b"HTTP/1.1 431 ")
            await stream.aclose()
            # Garbage: 400.
            stream = await trio.open_tcp_stream(host, int(port))
            await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
            assert (await stream.receive_some(1000)).startswith(b"HTTP/1.1 400 ")
            await stream.aclose()
            # Over the body limit: 413 before the body is read.
            limit = engine.config.http_max_body_size
            stream = await trio.open_tcp_stream(host, int(port))
            await stream.send_all(
                f"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: {limit + 1}\r\n\r\n".encode()
            )
            assert (await stream.receive_some(1000)).startswith(b"HTTP/1.1 413 ")
            await stream.aclose()
            # Two pipelined requests in one write: two answers, in order.
            stream = await trio.open_tcp_stream(host, int(port))
            one = b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc"
            two = b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\nz"
            await stream.send_all(one + two)
            answers = b""
            while answers.count(b"HTTP/1.1 200") < 2:
                chunk = await stream.receive_some(1000)
                assert chunk, answers  # closed before the second answer
                answers += chunk
            assert answers.index(b"\r\n\r\n3") < answers.index(b"\r\n\r\n1")
            await stream.aclose()


async def test_slow_head_is_cut() -> None:
    async with open_engine(port=0, http_port=0, http_head_timeout=0.5) as engine:
        host, port = engine.http_url.removeprefix("http://").split(":")
        with trio.fail_after(10):
            stream = await trio.open_tcp_stream(host, int(port))
            await stream.send_all(b"GET / HTTP/1.1\r\nhost: x\r\n")  # and never the rest
            answer = b""
            while chunk := await stream.receive_some(1000):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 408 ")
            await stream.aclose()
