"""HTTP triggers with the official SDKs as the handlers (PyPI iii-sdk 0.25.0 and npm iii-sdk
0.22.1, through py_http_peer.py and node/http_peer.mjs): routes bound from each SDK, a JSON
route, a streamed upload and download checked by sha256, SSE, and route middleware, through
our engine's HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import AsyncIterator

import pytest
import trio

from iii_trio import Engine, open_engine
from tests.http_client import HttpClient, fetch, header
from tests.interop.pattern import pattern_chunks, pattern_sha256
from tests.interop.peers import peer_command, peer_env

pytestmark = pytest.mark.interop

SIZE = 8 * 1024 * 1024 + 4321


async def _serve_peer(
    kind: str, engine: Engine, prefix: str, *, task_status: trio.TaskStatus[None]
) -> None:
    cmd = [
        *peer_command(kind, "py_http_peer.py", "http_peer.mjs"),
        "--url",
        engine.url,
        "--prefix",
        prefix,
    ]
    proc = await trio.lowlevel.open_process(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=peer_env(),
    )
    assert proc.stdin is not None and proc.stderr is not None
    stderr = bytearray()
    try:
        async with trio.open_nursery() as nursery:

            async def collect() -> None:
                assert proc.stderr is not None
                async for chunk in proc.stderr:
                    stderr.extend(chunk)

            nursery.start_soon(collect)
            routes = engine._http.triggers.routes  # type: ignore[union-attr]
            with trio.fail_after(30):
                while len(routes) < 5:
                    if proc.poll() is not None:
                        raise AssertionError(f"{kind} peer exited:\n{stderr.decode()[-3000:]}")
                    await trio.sleep(0.05)
            task_status.started()
            await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True):
            await proc.stdin.aclose()
            with trio.move_on_after(10):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def _upload(url: str, target: str) -> dict[str, object]:
    async def body() -> AsyncIterator[bytes]:
        for chunk in pattern_chunks(SIZE):
            yield chunk

    async with await HttpClient.connect(url) as client:
        await client.send_request(
            "POST", target, [("content-type", "application/octet-stream")], body(), length=SIZE
        )
        response = await client.response()
        assert response.status_code == 200
        result: dict[str, object] = json.loads(await client.body())
        return result


@pytest.mark.parametrize("kind", ["py", "node"])
async def test_official_sdk_http_handlers(kind: str) -> None:
    async with (
        open_engine(port=0, http_port=0, http_max_body_size=64 * 1024 * 1024) as engine,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(_serve_peer, kind, engine, "h")
        url = engine.http_url
        with trio.fail_after(60):
            response, body = await fetch(url, "GET", "/h/json?q=1")
            assert response.status_code == 200
            assert json.loads(body) == {"sdk": kind, "query": {"q": "1"}}

            assert await _upload(url, "/h/upload") == {
                "size": SIZE,
                "sha256": pattern_sha256(SIZE),
            }

            async with await HttpClient.connect(url) as client:
                await client.send_request("GET", f"/h/download?size={SIZE}")
                response = await client.response()
                assert header(response, "content-type") == "application/octet-stream"
                digest, got = hashlib.sha256(), 0
                async for chunk in client.chunks():
                    digest.update(chunk)
                    got += len(chunk)
                assert (got, digest.hexdigest()) == (SIZE, pattern_sha256(SIZE))

            response, body = await fetch(url, "GET", "/h/sse")
            assert header(response, "content-type") == "text/event-stream"
            assert body.decode() == "".join(f"id: {n}\ndata: tick {n}\n\n" for n in range(3))

            response, body = await fetch(url, "GET", "/h/guarded", headers=[("x-deny", "1")])
            assert (response.status_code, json.loads(body)) == (403, {"denied": True})
            response, body = await fetch(url, "GET", "/h/guarded")
            assert (response.status_code, json.loads(body)) == (200, {"guarded": "passed"})
        nursery.cancel_scope.cancel()
