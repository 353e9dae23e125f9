"""Sessions: tests (default), lint, typecheck, bench, attacks, soak. CI runs ``nox -s tests``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["tests"]

ROOT = Path(__file__).parent
NODE_PEER = ROOT / "tests" / "interop" / "node"


def _install_node_peer(session: nox.Session) -> None:
    if shutil.which("npm") is None:
        if os.environ.get("IIITRIO_REQUIRE_NODE") == "1":
            session.error(
                "npm not found: the Node SDK interop tests need it (IIITRIO_REQUIRE_NODE)"
            )
        session.warn("npm not found: the Node SDK interop tests will be skipped")
        return
    with session.chdir(NODE_PEER):
        session.run("npm", "ci", "--no-audit", "--no-fund", external=True)


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (real loopback sockets; official SDK interop included)."""
    session.install("-e", ".[test]")
    _install_node_peer(session)
    session.run("pytest", *(session.posargs or ["tests/"]))
    if not session.posargs:
        # The end-to-end tests again, with the workers on in-process message sockets
        # (Engine.local_dialer) instead of loopback TCP.
        session.run("pytest", "tests/e2e", env={"IIITRIO_TEST_TRANSPORT": "local"})


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff==0.17.6")  # keep in step with the `lint` extra in pyproject.toml
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[test,lint]")
    session.run("mypy", "--strict", "iii_trio", "tests", "benchmarks", "noxfile.py")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks with same-run baselines (see benchmarks/README.md)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session
def attacks(session: nox.Session) -> None:
    """Issue 12's attacks on an engine; ``-- --engine-root DIR`` runs another checkout's
    engine (see benchmarks/README.md)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "benchmarks.attacks", *session.posargs)


@nox.session
def soak(session: nox.Session) -> None:
    """Long reliability run (not part of the default test run)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "benchmarks.soak", *session.posargs)


@nox.session(name="official-http")
def official_http(session: nox.Session) -> None:
    """The official Python SDK's HTTP tests (from the iii-sdk 0.25.0 sdist, downloaded to a
    temporary folder) against a fresh ``iii-trio engine --http-port``."""
    session.install("-e", ".")
    session.run("python", "tests/interop/official_http.py", *session.posargs)
