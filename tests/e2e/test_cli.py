"""The iii-trio command line against a real engine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

import pytest
import trio

import iii_trio


async def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(timeout):
        return await trio.run_process(
            [sys.executable, "-m", "iii_trio", *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


async def test_call_and_listings(iii_engine, iii_worker) -> None:
    server = await iii_worker(name="cli-server")
    server.register_function("cli::add", lambda p: p["a"] + p["b"], description="adds")
    await iii_engine.wait_function("cli::add")
    url = iii_engine.url
    done = await _cli("call", "cli::add", "--json", '{"a": 2, "b": 3}', "--url", url)
    assert done.returncode == 0 and json.loads(done.stdout) == 5
    done = await _cli("call", "cli::missing", "--url", url)
    assert done.returncode == 1 and b"function_not_found" in done.stderr
    done = await _cli("call", "cli::add", "--json", "{not json", "--url", url)
    assert done.returncode == 2
    done = await _cli("functions", "--url", url)
    assert done.returncode == 0 and b"cli::add" in done.stdout and b"adds" in done.stdout
    done = await _cli("workers", "--json", "--url", url)
    assert "cli-server" in {w["name"] for w in json.loads(done.stdout)}
    done = await _cli("channels", "--url", url)
    assert done.returncode == 0
    done = await _cli("functions", "--url", "ws://127.0.0.1:9")
    assert done.returncode == 3 and b"cannot reach the engine" in done.stderr


async def test_send_and_receive_files(iii_engine, iii_worker, tmp_path) -> None:
    server = await iii_worker(name="files")
    store: dict[str, bytes] = {}

    async def put(payload):
        store[payload["name"]] = await payload["reader"].read_all()
        return {"stored": payload["name"], "size": len(store[payload["name"]])}

    async def get(payload):
        await payload["writer"].send_all(store[payload["name"]])

    server.register_function("files::put", put)
    server.register_function("files::get", get)
    await iii_engine.wait_function("files::get")
    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    done = await _cli("send", str(source), "--to", "files::put", "--quiet", "--url", iii_engine.url)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"stored": "data.bin", "size": source.stat().st_size}
    target = tmp_path / "back.bin"
    done = await _cli(
        "receive",
        "--from",
        "files::get",
        "--json",
        '{"name": "data.bin"}',
        "-o",
        str(target),
        "--quiet",
        "--url",
        iii_engine.url,
    )
    assert done.returncode == 0, done.stderr
    assert target.read_bytes() == source.read_bytes()


async def test_demo_checks_its_own_transfer() -> None:
    done = await _cli("demo", "--size-mb", "8", "--quiet")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    sent = next(line for line in lines if line.startswith("sent")).split()[-1]
    received = next(line for line in lines if line.startswith("received")).split()[4]
    assert sent == received


async def test_engine_command_serves_and_stops_on_sigterm() -> None:
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "iii_trio", "engine", "--port", "0", "--log-level", "WARNING"],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        with trio.fail_after(30):
            banner = b""
            while b"Ctrl-C" not in banner:
                chunk = await proc.stdout.receive_some()
                assert chunk, banner
                banner += chunk
            url = banner.split(b"listening on ")[1].split()[0].decode()
            assert b"token: off" in banner
            async with iii_trio.connect_worker(url) as worker:
                assert await worker.trigger("engine::functions::list", {}) == {"functions": []}
            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await proc.stdout.aclose()


async def test_engine_command_refuses_bad_limits() -> None:
    done = await _cli("engine", "--port", "0", "--channel-buffer", "0")
    assert done.returncode == 2
    assert b"channel_buffer_bytes must be > 0" in done.stderr
    assert b"Traceback" not in done.stderr


@pytest.mark.parametrize(
    "bad", [{"port": 70000}, {"channel_memory_limit": -1}, {"invocation_timeout": float("nan")}]
)
def test_engine_config_validates(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        iii_trio.EngineConfig(**bad)
