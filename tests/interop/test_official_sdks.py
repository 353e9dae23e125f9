"""Wire compatibility with the official iii SDKs (PyPI iii-sdk 0.25.0, npm iii-sdk 0.22.1),
each run as a real worker process against our engine, in both directions."""

from __future__ import annotations

import hashlib
import json

import pytest
import trio

import iii_trio
from tests.interop.pattern import pattern_chunks, pattern_sha256
from tests.interop.peers import PEERS, run_peer, serving_peer

pytestmark = pytest.mark.interop

MESSAGES = ["start", "half way ✓", '{"progress": 1.0}']


@pytest.fixture(params=PEERS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _write_pattern(writer: iii_trio.ChannelWriter, size: int, messages: list[str]) -> str:
    digest = hashlib.sha256()
    for text in messages:
        await writer.send_message(text)
    for chunk in pattern_chunks(size):
        digest.update(chunk)
        await writer.send_all(chunk)
    await writer.aclose()
    return digest.hexdigest()


async def _read_everything(reader: iii_trio.ChannelReader) -> tuple[int, str, list[str]]:
    messages: list[str] = []
    reader.on_message(messages.append)
    digest = hashlib.sha256()
    size = 0
    async for chunk in reader:
        size += len(chunk)
        digest.update(chunk)
    return size, digest.hexdigest(), messages


# --- official worker serves, our SDK calls ---------------------------------------------------


async def test_official_functions_called_by_our_sdk(kind, iii_engine, iii_worker) -> None:
    async with serving_peer(kind, iii_engine.url, f"{kind}-server", "peer"):
        client = await iii_worker(name="ours")
        with trio.fail_after(30):
            assert await client.trigger("peer::echo", {"a": [1, "x"]}) == {
                "echo": {"a": [1, "x"]},
                "peer": kind,
            }
            with pytest.raises(iii_trio.InvocationFailed) as info:
                await client.trigger("peer::fail", {"why": "testing"})
            assert info.value.message == "boom: testing"
            with pytest.raises(iii_trio.FunctionNotFound):
                await client.trigger("peer::missing", {})
            assert await client.trigger("peer::slow", {"ms": 10}) == {"slept": 10}
            assert await client.trigger("peer::echo", {"v": 1}, action="void") is None
            listed = await client.trigger("engine::functions::list", {"prefix": "peer::"})
            assert {f["function_id"] for f in listed["functions"]} >= {
                "peer::echo",
                "peer::sink",
                "peer::source",
            }
            workers = await client.trigger("engine::workers::list", {})
            assert f"{kind}-server" in {w["name"] for w in workers["workers"]}


@pytest.mark.parametrize("size", [0, 1, 5 * 1024 * 1024 + 3])
async def test_our_writer_to_official_reader(kind, size, iii_engine, iii_worker) -> None:
    async with serving_peer(kind, iii_engine.url, f"{kind}-sink", "peer"):
        client = await iii_worker(name="ours")
        with trio.fail_after(60):
            async with client.open_channel() as channel, trio.open_nursery() as nursery:
                outcome: dict[str, object] = {}

                async def call() -> None:
                    outcome["result"] = await client.trigger(
                        "peer::sink", {"reader": channel.reader_ref}
                    )

                nursery.start_soon(call)
                sent = await _write_pattern(channel.writer, size, MESSAGES)
        assert outcome["result"] == {"size": size, "sha256": sent, "messages": MESSAGES}
        assert sent == pattern_sha256(size)
    await _no_channels_left(iii_engine)


@pytest.mark.parametrize("size", [0, 1, 5 * 1024 * 1024 + 3])
async def test_official_writer_to_our_reader(kind, size, iii_engine, iii_worker) -> None:
    async with serving_peer(kind, iii_engine.url, f"{kind}-source", "peer"):
        client = await iii_worker(name="ours")
        with trio.fail_after(60):
            async with client.open_channel() as channel, trio.open_nursery() as nursery:
                outcome: dict[str, object] = {}

                async def call() -> None:
                    outcome["result"] = await client.trigger(
                        "peer::source",
                        {"writer": channel.writer_ref, "size": size, "messages": MESSAGES},
                    )

                nursery.start_soon(call)
                got = await _read_everything(channel.reader)
        assert got == (size, pattern_sha256(size), MESSAGES)
        assert outcome["result"] == {"size": size, "sha256": pattern_sha256(size)}
    await _no_channels_left(iii_engine)


# --- our worker serves, the official SDK calls -----------------------------------------------


@pytest.fixture
async def our_server(iii_engine, iii_worker):
    server = await iii_worker(name="our-server")

    async def echo(payload):
        return {"echo": payload}

    async def fail(payload):
        raise RuntimeError(f"nope: {payload['why']}")

    async def sink(payload):
        size, digest, messages = await _read_everything(payload["reader"])
        return {"size": size, "sha256": digest, "messages": messages}

    async def source(payload):
        digest = await _write_pattern(
            payload["writer"], payload["size"], payload.get("messages", [])
        )
        return {"size": payload["size"], "sha256": digest}

    for function_id, handler in {
        "ours::echo": echo,
        "ours::fail": fail,
        "ours::sink": sink,
        "ours::source": source,
    }.items():
        server.register_function(function_id, handler)
        await iii_engine.wait_function(function_id)
    return server


async def test_official_caller_to_our_functions(kind, iii_engine, our_server) -> None:
    url = iii_engine.url
    got = await run_peer(
        kind,
        url,
        f"{kind}-caller",
        "call",
        "--function",
        "ours::echo",
        "--payload",
        json.dumps({"x": [1, 2]}),
    )
    assert got["ok"] is True
    assert got["result"]["echo"]["x"] == [1, 2]
    assert "_caller_worker_id" in got["result"]["echo"]
    got = await run_peer(
        kind, url, f"{kind}-caller", "call", "--function", "ours::fail", "--payload", '{"why": "w"}'
    )
    assert got == {"ok": False, "code": "invocation_failed", "message": "nope: w"} or (
        got["ok"] is False and got["code"] == "invocation_failed" and "nope: w" in got["message"]
    )
    got = await run_peer(
        kind, url, f"{kind}-caller", "call", "--function", "nobody::home", "--payload", "{}"
    )
    assert got["ok"] is False and got["code"] == "function_not_found"
    got = await run_peer(kind, url, f"{kind}-caller", "call", "--function", "ours::echo", "--void")
    assert got["ok"] is True and got["result"] is None
    # Python drops "data" for a null payload; the engine must treat it as null.
    got = await run_peer(kind, url, f"{kind}-caller", "call", "--function", "ours::echo")
    assert got["ok"] is True and got["result"] == {"echo": None}


@pytest.mark.parametrize("size", [0, 3 * 1024 * 1024 + 1])
async def test_official_push_to_our_reader(kind, size, iii_engine, our_server) -> None:
    got = await run_peer(
        kind,
        iii_engine.url,
        f"{kind}-pusher",
        "push",
        "--function",
        "ours::sink",
        "--size",
        str(size),
        "--messages",
        json.dumps(MESSAGES),
    )
    assert got["ok"] is True, got
    assert got["result"] == {"size": size, "sha256": pattern_sha256(size), "messages": MESSAGES}
    await _no_channels_left(iii_engine)


@pytest.mark.parametrize("size", [0, 3 * 1024 * 1024 + 1])
async def test_official_pull_from_our_writer(kind, size, iii_engine, our_server) -> None:
    got = await run_peer(
        kind,
        iii_engine.url,
        f"{kind}-puller",
        "pull",
        "--function",
        "ours::source",
        "--size",
        str(size),
        "--messages",
        json.dumps(MESSAGES),
    )
    assert got["ok"] is True, got
    assert got["size"] == size and got["sha256"] == pattern_sha256(size)
    assert got["messages"] == MESSAGES
    await _no_channels_left(iii_engine)


async def test_64_mib_both_ways(kind, iii_engine, our_server) -> None:
    size = 64 * 1024 * 1024
    pushed = await run_peer(
        kind,
        iii_engine.url,
        f"{kind}-big-push",
        "push",
        "--function",
        "ours::sink",
        "--size",
        str(size),
        timeout=120,
    )
    assert pushed["ok"] is True and pushed["result"]["sha256"] == pattern_sha256(size)
    pulled = await run_peer(
        kind,
        iii_engine.url,
        f"{kind}-big-pull",
        "pull",
        "--function",
        "ours::source",
        "--size",
        str(size),
        timeout=120,
    )
    assert (
        pulled["ok"] is True and pulled["sha256"] == pattern_sha256(size) and pulled["size"] == size
    )
    await _no_channels_left(iii_engine)


async def _no_channels_left(engine: iii_trio.Engine) -> None:
    with trio.fail_after(10):
        await engine.wait_until(lambda e: e.statistics().channels == 0)
