"""Docs that match the code: the API reference is current and complete, every public name is
documented, and what is still undocumented is a known, shrinking list."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import iii_trio

ROOT = Path(__file__).parents[1]


def load_gen_api() -> ModuleType:
    """docs/gen_api.py as a module (``docs/`` is not a package)."""
    spec = importlib.util.spec_from_file_location("gen_api", ROOT / "docs" / "gen_api.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen_api = load_gen_api()

#: Public members, fields and names with no description yet. Document one, then remove it
#: here; a new public name must come documented.
KNOWN_GAPS = [
    "ActionEnqueue.queue: field has no description",
    "Channel.reader: field has no description",
    "Channel.reader_ref: field has no description",
    "Channel.writer: field has no description",
    "Channel.writer_ref: field has no description",
    "EngineStatistics.channel_buffered_peak: field has no description",
    "EngineStatistics.channels_finished: field has no description",
    "EngineStatistics.outbox_peak: field has no description",
    "FunctionRef.function_id: field has no description",
    "FunctionRef.unregister: no docstring",
    "LocalDialer.engine: field has no description",
    "StreamChannelRef.access_key: field has no description",
    "StreamChannelRef.channel_id: field has no description",
    "StreamChannelRef.direction: field has no description",
    "Worker.connected: no docstring",
    "Worker.deliver: no docstring",
    "Worker.describe: no docstring",
    "Worker.on_message: no docstring",
    "Worker.rejected: no docstring",
]


def test_api_reference_is_current() -> None:
    assert (ROOT / "docs" / "api.md").read_text() == gen_api.render(), (
        "docs/api.md is stale: run `python docs/gen_api.py > docs/api.md`"
    )


def test_api_reference_is_deterministic() -> None:
    # Another process with another hash seed: set and dict orders must not leak into the file.
    done = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "gen_api.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        check=True,
    )
    assert done.stdout == (ROOT / "docs" / "api.md").read_text()


def test_api_reference_covers_every_public_name() -> None:
    text = (ROOT / "docs" / "api.md").read_text()
    for name in iii_trio.__all__:
        assert f"\n### `{name}`\n" in text, name
    for fixture in ("iii_engine", "iii_worker"):
        assert f"\n### `{fixture}`\n" in text, fixture


def test_public_names_are_exported_once_and_documented() -> None:
    assert len(set(iii_trio.__all__)) == len(iii_trio.__all__)
    for entry in gen_api.entries():
        assert entry.description, f"{entry.name} has no docstring (or `#:` comment)"
        # Everything public lives in a private module and is re-exported.
        assert entry.module == "iii_trio" or any(
            part.startswith("_") for part in entry.module.split(".")[1:]
        ), (entry.name, entry.module)


def test_documentation_gaps_are_known() -> None:
    gaps = gen_api.gaps()
    new = sorted(set(gaps) - set(KNOWN_GAPS))
    fixed = sorted(set(KNOWN_GAPS) - set(gaps))
    assert not new, f"document these (Google-style docstring, or `Attributes:`): {new}"
    assert not fixed, f"documented now: remove them from KNOWN_GAPS: {fixed}"


def test_docstring_sections_become_markdown() -> None:
    doc = "\n".join(
        [
            "Do the thing (see :meth:`Worker.trigger` and :class:`~iii_trio.Nowhere`).",
            "",
            "Example::",
            "",
            "    await do_it()",
            "",
            "Args:",
            "    x: the ``x``,",
            "        over two lines.",
            "",
            "Raises:",
            "    ValueError, trio.BusyResourceError: when it fails.",
        ]
    )
    linker = gen_api.Linker({"Worker.trigger": "workertrigger"})
    assert gen_api.render_doc(doc, linker, None) == [
        "Do the thing (see [`Worker.trigger`](#workertrigger) and `Nowhere`).",
        "",
        "Example:",
        "",
        "```text",
        "await do_it()",
        "```",
        "",
        "",
        "**Arguments:**",
        "",
        "- `x`: the `x`, over two lines.",
        "",
        "**Raises:**",
        "",
        "- `ValueError`, `trio.BusyResourceError`: when it fails.",
    ]


def test_cli_help_everywhere() -> None:
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
