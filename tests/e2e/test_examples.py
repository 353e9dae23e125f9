"""Every script in examples/ runs as written against a real engine and checks its own result."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

import iii_trio

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.mark.parametrize("name", ["upload", "download", "progress", "pipeline"])
async def test_example_runs(name: str, iii_engine) -> None:
    with trio.fail_after(120):
        done = await trio.run_process(
            [sys.executable, str(EXAMPLES / f"{name}.py"), "--url", iii_engine.url],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    output = done.stdout.decode()
    assert done.returncode == 0, output + done.stderr.decode()[-3000:]
    assert "MISMATCH" not in output
    with trio.fail_after(10):
        await iii_engine.wait_until(
            lambda e: e.statistics().channels == 0 and e.statistics().invocations == 0
        )


async def test_readme_worker_example(iii_engine) -> None:
    """The README's worker snippet, run as written (with the engine URL swapped in)."""
    readme = (EXAMPLES.parent / "README.md").read_text()
    code = readme.split("## Write a worker", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    code = code.replace('"ws://127.0.0.1:49134"', repr(iii_engine.url))
    with trio.fail_after(60):
        done = await trio.run_process(
            [sys.executable, "-c", code], capture_stdout=True, capture_stderr=True, check=False
        )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert "starting" in done.stdout.decode()


async def test_readme_http_example() -> None:
    """The README's HTTP triggers snippet, run as written (with the engine's URLs swapped in)."""
    readme = (EXAMPLES.parent / "README.md").read_text()
    code = readme.split("## HTTP triggers", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    async with iii_trio.open_engine(port=0, http_port=0) as engine:
        code = code.replace('"ws://127.0.0.1:49134"', repr(engine.url))
        code = code.replace('"http://127.0.0.1:3111"', repr(engine.http_url))
        with trio.fail_after(60):
            done = await trio.run_process(
                [sys.executable, "-c", code], capture_stdout=True, capture_stderr=True, check=False
            )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    out = done.stdout.decode()
    assert "uploaded: 201" in out and '"size":5000000' in out
    assert "downloaded: 200 3000000 bytes" in out
