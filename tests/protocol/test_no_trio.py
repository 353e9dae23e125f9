"""The sans-IO rule (STYLE G1): the protocol core and the WebSocket framing never import trio.

Checked twice: statically (every import statement, relative ones resolved, must stay inside
the sans-IO set) and dynamically (import those modules in a fresh interpreter where ``trio``
cannot be imported at all).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import iii_trio

PACKAGE_DIR = Path(iii_trio.__file__).parent
PROTOCOL_DIR = PACKAGE_DIR / "protocol"
SANS_IO_WS = ("_frames", "_mask", "_handshake")

#: Never imported by a sans-IO module's own code.
BANNED_ROOTS = frozenset({"trio", "trio_websocket", "anyio", "asyncio"})
#: Never loaded at all, even by third-party dependencies (``_mask`` loads ``websockets``).
NEVER_LOADED = frozenset({"trio", "trio_websocket"})


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sans_io_files() -> list[Path]:
    files = sorted(PROTOCOL_DIR.rglob("*.py"))
    files += [PACKAGE_DIR / "_ws" / f"{name}.py" for name in SANS_IO_WS]
    return files


SANS_IO_FILES = _sans_io_files()
SANS_IO_MODULES = frozenset(_module_name(path) for path in SANS_IO_FILES)
#: Where a sans-IO module may import from inside iii_trio: each other, the error tree and the
#: wire codes.
ALLOWED_INTERNAL = SANS_IO_MODULES | {"iii_trio._errors", "iii_trio._codes"}


def _resolve(importer: str, is_package: bool, level: int, module: str | None) -> str:
    """The absolute name a relative ``from ... import`` refers to."""
    package = importer if is_package else importer.rpartition(".")[0]
    for _ in range(level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{module}" if module else package


def _is_module(name: str) -> bool:
    base = PACKAGE_DIR.parent / Path(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _imports(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    """``(line, absolute module)`` for every module the file imports, at any depth.

    Package ``__init__`` files that Python runs on the way (``iii_trio``, ``iii_trio._ws``) are
    not listed: the dynamic test below shows the sans-IO modules work without them.
    """
    importer = _module_name(path)
    is_package = path.name == "__init__.py"
    if source is None:
        source = path.read_text(encoding="utf-8")
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = (
                _resolve(importer, is_package, node.level, node.module)
                if node.level
                else node.module or ""
            )
            submodules = [f"{base}.{alias.name}" for alias in node.names]
            if base.startswith("iii_trio") and all(_is_module(name) for name in submodules):
                found.extend((node.lineno, name) for name in submodules)  # from . import _x
            else:
                found.append((node.lineno, base))
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name in {"__import__", "import_module"}:
                first = node.args[0] if node.args else None
                target = first.value if isinstance(first, ast.Constant) else "<dynamic>"
                found.append((node.lineno, str(target)))
    return found


def _problems(path: Path, source: str | None = None) -> list[str]:
    problems: list[str] = []
    for line, module in _imports(path, source):
        root = module.partition(".")[0]
        if root in BANNED_ROOTS or module == "<dynamic>":
            problems.append(f"line {line}: imports {module}")
        elif root == "iii_trio" and module not in ALLOWED_INTERNAL:
            problems.append(f"line {line}: imports {module}, which is not sans-IO")
    return problems


def test_the_sans_io_set_is_what_we_think() -> None:
    assert PROTOCOL_DIR / "__init__.py" in SANS_IO_FILES
    assert PROTOCOL_DIR / "_codec.py" in SANS_IO_FILES
    for path in SANS_IO_FILES:
        assert path.is_file(), path
    assert "iii_trio._ws._frames" in SANS_IO_MODULES
    assert "iii_trio.protocol" in SANS_IO_MODULES


def test_resolve_relative_imports() -> None:
    assert (
        _resolve("iii_trio.protocol._codec", False, 1, "_messages") == "iii_trio.protocol._messages"
    )
    assert _resolve("iii_trio.protocol._codec", False, 2, "_errors") == "iii_trio._errors"
    assert _resolve("iii_trio.protocol", True, 1, "_codec") == "iii_trio.protocol._codec"
    assert _resolve("iii_trio.protocol", True, 2, None) == "iii_trio"
    assert _resolve("iii_trio._ws._frames", False, 1, "_connection") == "iii_trio._ws._connection"


@pytest.mark.parametrize("path", SANS_IO_FILES, ids=lambda p: _module_name(p))
def test_no_trio_imports(path: Path) -> None:
    problems = _problems(path)
    assert not problems, f"{_module_name(path)} breaks the sans-IO rule:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "source",
    [
        "import trio\n",
        "import trio.lowlevel as ll\n",
        "import os, trio_websocket\n",
        "from trio import Lock\n",
        "from trio_websocket import open_websocket\n",
        "def f():\n    from . import _connection\n",  # hidden in a function
        "from ._connection import WebSocket\n",
        "from ._server import serve_websockets\n",
        "from . import _frames, _client\n",
        "from .. import worker\n",
        "from ..engine import _engine\n",
        "from iii_trio._ws import _connection\n",
        "import iii_trio.worker\n",
        "importlib.import_module('trio')\n",
        "__import__(name)\n",
    ],
)
def test_checker_catches_violations(source: str) -> None:
    """The static check is only worth something if it fails on the imports it targets."""
    pretend = PACKAGE_DIR / "_ws" / "_frames.py"
    assert _problems(pretend, source), source


@pytest.mark.parametrize(
    "source",
    [
        "from ._mask import apply_mask\n",
        "from . import _mask, _handshake\n",
        "from .._errors import RemoteProtocolError\n",
        "from ..protocol import decode\n",
        "from ..protocol._messages import Ping\n",
        "import json, struct\n",
    ],
)
def test_checker_allows_sans_io_imports(source: str) -> None:
    pretend = PACKAGE_DIR / "_ws" / "_frames.py"
    assert not _problems(pretend, source), source


def test_import_without_trio_in_a_fresh_interpreter() -> None:
    """Import the sans-IO modules where ``trio`` cannot be imported.

    ``iii_trio/__init__.py`` and ``_ws/__init__.py`` (which do import trio) are skipped.
    """
    modules = sorted(SANS_IO_MODULES | {"iii_trio._errors"})
    packages = [("iii_trio", str(PACKAGE_DIR)), ("iii_trio._ws", str(PACKAGE_DIR / "_ws"))]
    script = textwrap.dedent(
        f"""
        import importlib, importlib.abc, sys, types

        class Ban(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in {sorted(NEVER_LOADED)!r}:
                    raise ImportError(f"sans-IO module imported {{name}}")
                return None

        sys.meta_path.insert(0, Ban())
        # Bare parent packages, so that iii_trio/__init__.py and _ws/__init__.py (which do
        # import trio) are not run.
        for name, path in {packages!r}:
            pkg = types.ModuleType(name)
            pkg.__path__ = [path]
            sys.modules[name] = pkg
        for name in {modules!r}:
            importlib.import_module(name)
        leaked = sorted(m for m in sys.modules if m.partition(".")[0] in {sorted(NEVER_LOADED)!r})
        assert not leaked, leaked
        from iii_trio.protocol import Ping, decode, encode
        assert decode(encode(Ping())) == Ping()
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
