"""Docs that match the code: the API reference is current and the public surface is pinned."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import iii_trio

ROOT = Path(__file__).parents[1]


def test_api_reference_is_current() -> None:
    spec = importlib.util.spec_from_file_location("gen_api", ROOT / "docs" / "gen_api.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (ROOT / "docs" / "api.md").read_text() == module.render(), (
        "docs/api.md is stale: run `python docs/gen_api.py > docs/api.md`"
    )


def test_public_names_are_exported_once_and_documented() -> None:
    for name in iii_trio.__all__:
        obj = getattr(iii_trio, name)
        if name != "__version__":
            assert getattr(obj, "__doc__", None), f"{name} has no docstring"
    assert len(set(iii_trio.__all__)) == len(iii_trio.__all__)
    # everything public lives in a private module, re-exported
    for name in iii_trio.__all__:
        module = getattr(getattr(iii_trio, name), "__module__", "iii_trio") or ""
        assert module == "iii_trio" or any(
            part.startswith("_") for part in module.split(".")[1:]
        ), (name, module)


def test_cli_help_everywhere() -> None:
    import subprocess

    for args in (
        ["--help"],
        ["engine", "--help"],
        ["demo", "--help"],
        ["call", "--help"],
        ["send", "--help"],
        ["receive", "--help"],
        ["functions", "--help"],
        ["workers", "--help"],
        ["channels", "--help"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "iii_trio", *args], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0 and "usage:" in done.stdout, (args, done.stderr)
