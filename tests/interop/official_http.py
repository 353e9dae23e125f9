"""Run the official Python SDK's HTTP tests against a fresh ``iii-trio engine``.

The tests ship in the ``iii-sdk`` 0.25.0 sdist on PyPI: this script downloads it into a
temporary folder (nothing of it enters the repository), makes a virtualenv there with the
SDK and what its tests need (aiohttp, pytest-asyncio), writes a few MiB of test data where the
upload/download tests look for ``handbook.pdf``, starts an engine with its HTTP server (and
HTTP-invoked functions allowed to reach loopback ``http://`` URLs, which the tests use), and
runs::

    test_api_triggers.py test_middleware.py test_healthcheck.py
    test_http_external_functions_integration.py

with ``III_URL`` / ``III_HTTP_URL`` pointing at it. The pytest exit status is this script's.

Usage: ``python tests/interop/official_http.py [--keep DIR] [-- PYTEST_ARGS...]`` (or
``nox -s official-http``). Needs PyPI.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

SDK = "iii-sdk==0.25.0"
TESTS = [
    "test_api_triggers.py",
    "test_middleware.py",
    "test_healthcheck.py",
    "test_http_external_functions_integration.py",
]
#: Size of the stand-in for ``handbook.pdf`` (the tests upload at most 8 MiB of it).
ASSET_BYTES = 9 * 1024 * 1024 + 12345


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _prepare(work: Path) -> Path:
    """Download and unpack the sdist, make the venv; the tests folder."""
    sdist = work / "sdist"
    sdist.mkdir(exist_ok=True)
    if not list(sdist.glob("*.tar.gz")):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                SDK,
                "--no-deps",
                "--no-binary",
                ":all:",
                "-q",
                "-d",
                str(sdist),
            ],
            check=True,
        )
    archive = next(sdist.glob("*.tar.gz"))
    root = work / "src"
    if not root.exists():
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")
    package = next(root.iterdir())
    venv = work / "venv"
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [
                str(venv / "bin" / "pip"),
                "install",
                "-q",
                SDK,
                "aiohttp>=3.9",
                "pytest>=8",
                "pytest-asyncio>=0.23",
            ],
            check=True,
        )
    # The tests read TEST_ASSETS_DIR = <tests>/../../../../test-assets (the monorepo layout).
    tests = package / "tests"
    assets = tests.parent.parent.parent.parent / "test-assets"
    assets.mkdir(parents=True, exist_ok=True)
    handbook = assets / "handbook.pdf"
    if not handbook.exists() or handbook.stat().st_size != ASSET_BYTES:
        block = os.urandom(1024 * 1024)
        with handbook.open("wb") as out:
            out.write(b"%PDF-1.4\n")
            left = ASSET_BYTES - 9
            while left > 0:
                out.write(block[:left])
                left -= len(block)
    return tests


def _wait_listening(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"the engine did not listen on {port}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", help="work folder to reuse (default: a temporary one)")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="iii-official-http-"))
    work.mkdir(parents=True, exist_ok=True)
    tests = _prepare(work)
    ws_port, http_port = _free_port(), _free_port()
    engine_cmd = [
        sys.executable, "-m", "iii_trio", "engine", "--port", str(ws_port),
        "--http-port", str(http_port), "--http-functions", "--http-functions-allow-http",
        "--http-functions-allow-private", "--log-level", "WARNING",
    ]  # fmt: skip
    log = (work / "engine.log").open("w")
    engine = subprocess.Popen(engine_cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_listening(http_port, time.monotonic() + 20)
        env = {
            **os.environ,
            "III_URL": f"ws://127.0.0.1:{ws_port}",
            "III_HTTP_URL": f"http://127.0.0.1:{http_port}",
            "OTEL_SDK_DISABLED": "true",
        }
        pytest_cmd = [
            str(work / "venv" / "bin" / "python"), "-m", "pytest", "-o", "addopts=",
            "-p", "no:cacheprovider", "-q", "-rs", "-W", "ignore::DeprecationWarning", *TESTS, *args.pytest_args,
        ]  # fmt: skip
        return subprocess.run(pytest_cmd, cwd=tests, env=env, check=False).returncode
    finally:
        engine.terminate()
        try:
            engine.wait(10)
        except subprocess.TimeoutExpired:
            engine.kill()
        log.close()
        print(f"engine log: {work / 'engine.log'}")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
