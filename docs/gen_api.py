"""Write docs/api.md from the public surface's signatures and docstrings.

python docs/gen_api.py > docs/api.md     (tests/test_docs.py checks it is current)
"""

from __future__ import annotations

import inspect
import sys

import iii_trio


def _first_paragraph(obj: object) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.split("\n\n", 1)[0].replace("\n", " ")


def _signature(obj: object) -> str:
    try:
        return str(inspect.signature(obj))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""


def render() -> str:
    out = [
        "# API reference",
        "",
        "Generated from the docstrings by `python docs/gen_api.py > docs/api.md`; everything here",
        "is importable from `iii_trio`. Full docstrings (with the errors each call raises) are in",
        "the code: `help(iii_trio.Worker.trigger)`.",
        "",
    ]
    for name in sorted(iii_trio.__all__, key=str.lower):
        obj = getattr(iii_trio, name)
        if inspect.isclass(obj):
            out.append(f"## class `{name}`")
            out.append("")
            out.append(_first_paragraph(obj))
            out.append("")
            members = [
                (member, value)
                for member, value in vars(obj).items()
                if not member.startswith("_")
                and (inspect.isfunction(value) or isinstance(value, property))
            ]
            for member, value in members:
                if isinstance(value, property):
                    out.append(f"- `{member}` (property): {_first_paragraph(value)}")
                else:
                    out.append(f"- `{member}{_signature(value)}`: {_first_paragraph(value)}")
            if members:
                out.append("")
        elif callable(obj):
            out.append(f"## `{name}{_signature(obj)}`")
            out.append("")
            out.append(_first_paragraph(obj))
            out.append("")
        else:
            out.append(f"## `{name}` = `{obj!r}`")
            out.append("")
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
