"""Start tests/e2e/worker_proc.py as a child process and wait for its ready line."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

SCRIPT = Path(__file__).with_name("worker_proc.py")
ROOT = Path(__file__).parents[2]


@asynccontextmanager
async def worker_process(
    url: str, mode: str, arg: str
) -> AsyncIterator[tuple[trio.Process, dict[str, Any]]]:
    proc = await trio.lowlevel.open_process(
        [sys.executable, str(SCRIPT), url, mode, arg],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        buffer = b""
        with trio.fail_after(30):
            while b"\n" not in buffer:
                chunk = await proc.stdout.receive_some()
                if not chunk:
                    raise AssertionError(f"worker process exited early ({await proc.wait()})")
                buffer += chunk
        yield proc, json.loads(buffer.split(b"\n")[0])
    finally:
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            await proc.stdin.aclose()
            await proc.stdout.aclose()
