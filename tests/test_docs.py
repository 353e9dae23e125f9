"""Docs that match the code: the API reference is current and complete, every public name is
documented, and what is still undocumented is a known, shrinking list."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import attrs

import iii_trio
from iii_trio import _codes
from iii_trio._errors import invocation_error
from iii_trio.engine._builtins import BUILTINS
from iii_trio.protocol import UNKNOWN_TYPE, WIRE_NAMES, ErrorBody

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
KNOWN_GAPS: list[str] = []


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
            "",
            "Prose after a section is its own paragraph.",
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
        "**Arguments:**",
        "",
        "- `x`: the `x`, over two lines.",
        "",
        "**Raises:**",
        "",
        "- `ValueError`, `trio.BusyResourceError`: when it fails.",
        "",
        "Prose after a section is its own paragraph.",
    ]


# --- docs/protocol.md ---------------------------------------------------------------------------

PROTOCOL = ROOT / "docs" / "protocol.md"


def _protocol_sections() -> dict[str, str]:
    """docs/protocol.md by heading (the heading line, then its text up to the next heading)."""
    sections: dict[str, str] = {}
    heading = ""
    for line in PROTOCOL.read_text().splitlines():
        if line.startswith("#"):
            heading = line
            sections[heading] = ""
        sections[heading] = sections.get(heading, "") + line + "\n"
    return sections


def test_protocol_doc_is_self_contained() -> None:
    text = PROTOCOL.read_text()
    assert "shared/" not in text and "/work/" not in text
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if not target.startswith(("http://", "https://")):
            assert (PROTOCOL.parent / target).exists(), (
                f"link to a file users do not have: {target}"
            )
    anchors = {gen_api.slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}
    for anchor in re.findall(r"\]\(#([^)]+)\)", text):
        assert anchor in anchors, f"link to a missing heading: #{anchor}"


def test_protocol_doc_lists_every_code() -> None:
    text = PROTOCOL.read_text()
    codes = {
        name: value
        for name, value in vars(_codes).items()
        if name.isupper() and isinstance(value, str | int)
    }
    assert codes
    for name, value in codes.items():
        if isinstance(value, str):
            assert f"`{value}`" in text, f"{name} ({value!r}) is not in docs/protocol.md"
        else:
            assert re.search(rf"^\|[^\n]*\b{value}\b", text, re.MULTILINE), (
                f"close code {name} ({value}) is in no table of docs/protocol.md"
            )
    assert f"`{UNKNOWN_TYPE}`" in text


def test_protocol_doc_names_the_right_exception_for_each_invocation_code() -> None:
    table = _protocol_sections()["### In `invocationresult.error.code`"]
    rows = re.findall(r"^\| `([a-z_]+)` \|.*\| `(\w+)` \|$", table, re.MULTILINE)
    assert len(rows) >= 10
    for code, exception in rows:
        expected = type(invocation_error(code, "message")).__name__
        assert exception == expected, f"{code}: the SDK raises {expected}, the doc says {exception}"


def test_protocol_doc_shows_every_message_and_field() -> None:
    sections = _protocol_sections()
    for cls, tag in WIRE_NAMES.items():
        found = [body for heading, body in sections.items() if f"`{tag}`" in heading]
        assert found, f"no section for message type {tag!r}"
        assert f'"type":"{tag}"' in found[0], f"no JSON example for {tag!r}"
        assert attrs.has(cls)
        for field in attrs.fields(cls):
            assert f"`{field.name}`" in found[0], f"{tag}.{field.name} is not in its table"
    text = PROTOCOL.read_text()
    for field in attrs.fields(ErrorBody):
        assert f"`{field.name}`" in text
    for function_id in BUILTINS:
        assert any(f"`{function_id}`" in heading for heading in sections), function_id


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
