"""Run the official-SDK interop peers (py_peer.py, node/peer.mjs) as subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

HERE = Path(__file__).parent
NODE_DIR = HERE / "node"
PEERS = ("py", "node")


def node_available() -> bool:
    return shutil.which("node") is not None and (NODE_DIR / "node_modules" / "iii-sdk").is_dir()


def require_node() -> None:
    """Skip the calling test when the Node SDK is not installed; fail it instead when
    ``IIITRIO_REQUIRE_NODE=1`` (CI sets it: there a missing Node SDK is a broken install)."""
    if node_available():
        return
    why = "Node SDK not installed (run: cd tests/interop/node && npm ci)"
    if os.environ.get("IIITRIO_REQUIRE_NODE") == "1":
        pytest.fail(why)
    pytest.skip(why)


def peer_command(kind: str, py: str = "py_peer.py", node: str = "peer.mjs") -> list[str]:
    """The command of a peer of ``kind`` (``py`` or ``node``): the script ``py`` or ``node``
    of this folder (``node/`` for Node)."""
    if kind == "py":
        return [sys.executable, str(HERE / py)]
    require_node()
    node_exe = shutil.which("node")
    assert node_exe is not None
    return [node_exe, str(NODE_DIR / node)]


def peer_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("III_WORKER_NAME", None)
    env.pop("III_URL", None)
    env["HOME"] = tempfile.mkdtemp(prefix="iii-peer-home-")  # the Python SDK writes ~/.iii/run
    env["OTEL_ENABLED"] = "false"
    return env


async def run_peer(
    kind: str, url: str, name: str, *args: str, timeout: float = 60
) -> dict[str, Any]:
    """Run a one-shot peer mode (call/push/pull) and return its last JSON line."""
    cmd = [*peer_command(kind), "--url", url, "--name", name, *args]
    with trio.fail_after(timeout):
        done = await trio.run_process(
            cmd, capture_stdout=True, capture_stderr=True, check=False, env=peer_env()
        )
    lines = [line for line in done.stdout.decode().splitlines() if line.startswith("{")]
    if done.returncode not in (0, 1) or not lines:
        raise AssertionError(
            f"peer {kind} {args[:1]} exited {done.returncode}\nstdout: {done.stdout.decode()[-2000:]}"
            f"\nstderr: {done.stderr.decode()[-4000:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1])
    return result


@asynccontextmanager
async def serving_peer(kind: str, url: str, name: str, prefix: str) -> AsyncIterator[trio.Process]:
    """A peer in ``serve`` mode, ready (its functions registered) for the block."""
    cmd = [*peer_command(kind), "--url", url, "--name", name, "serve", "--prefix", prefix]
    proc = await trio.lowlevel.open_process(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=peer_env()
    )
    assert proc.stdout is not None and proc.stdin is not None and proc.stderr is not None
    stderr = bytearray()

    async def collect_stderr() -> None:
        assert proc.stderr is not None
        async for chunk in proc.stderr:
            stderr.extend(chunk)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect_stderr)
        try:
            buffer = b""
            with trio.fail_after(60):
                while b'"ready"' not in buffer:
                    chunk = await proc.stdout.receive_some()
                    if not chunk:
                        raise AssertionError(f"peer {kind} exited before ready:\n{stderr.decode()}")
                    buffer += chunk
            yield proc
        finally:
            with trio.CancelScope(shield=True):
                await proc.stdin.aclose()
                with trio.move_on_after(20):
                    await proc.wait()
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
                await proc.stdout.aclose()
            nursery.cancel_scope.cancel()
