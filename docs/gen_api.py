"""Write docs/api.md: the reference of everything in ``iii_trio.__all__`` and of the pytest
plugin's fixtures.

    python docs/gen_api.py > docs/api.md     (tests/test_docs.py checks it is current)

Only ``iii_trio.__all__`` is walked, so moving code between private modules changes nothing
here. Where each part comes from:

* functions, classes, methods, properties: ``inspect.signature`` and the whole docstring
  (Google style: ``Args:``, ``Returns:``, ``Raises:``, ``Attributes:`` become Markdown);
* attributes: a class docstring's ``Attributes:`` section, ``#:`` comments above attrs fields
  or above ``self.x = ...`` in ``__init__``; attrs fields add their type and default;
* type aliases and constants (names bound by an assignment): the assignment, found by
  following the ``from ... import`` chain from ``iii_trio/__init__.py``; its description is a
  ``#:`` comment above it or a string literal below it, else a ``#:`` comment above the
  re-export in ``iii_trio/__init__.py``;
* fixtures: ``iii_trio/testing/_plugin.py``, read with ``ast`` (pytest is not imported).

Signatures go in ``python`` code blocks written as colon-less headers (``def f(x: int) -> str``),
which never parse, so ``ruff format`` leaves them alone; docstring examples go in ``text``
blocks for the same reason. The output depends only on the code: no addresses, no dict order
of sets, no paths.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

import attrs

import iii_trio

PACKAGE: Final = "iii_trio"
PLUGIN_MODULE: Final = "iii_trio.testing._plugin"
#: Signatures longer than this are written one parameter per line.
SIGNATURE_WIDTH: Final = 88

SECTIONS: Final = ("Worker SDK", "The engine", "Errors", "Type aliases", "Utilities")
FIXTURES_SECTION: Final = "pytest fixtures"


# --- where names are bound (source level) ----------------------------------------------------


@attrs.frozen
class Definition:
    """The statement that binds a name: in which module, and what it says about it."""

    module: str
    node: ast.stmt
    source: str
    #: Bound inside ``if TYPE_CHECKING:`` (what type checkers see, not what runs).
    type_checking: bool
    #: A ``#:`` comment above the statement, or a string literal right below it.
    doc: str | None


def _module_source(module: str) -> str:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise LookupError(f"no source for module {module}")
    return Path(spec.origin).read_text(encoding="utf-8")


def _is_package(module: str) -> bool:
    spec = importlib.util.find_spec(module)
    return spec is not None and spec.submodule_search_locations is not None


def _comment_above(source_lines: Sequence[str], lineno: int) -> str | None:
    """The ``#:`` comment lines right above line ``lineno`` (1-based), joined."""
    found: list[str] = []
    index = lineno - 2
    while index >= 0:
        stripped = source_lines[index].strip()
        if not stripped.startswith("#:"):
            break
        found.append(stripped[2:].strip())
        index -= 1
    return " ".join(reversed(found)) if found else None


def _binds(node: ast.stmt, name: str) -> bool:
    if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
        return node.name == name
    if isinstance(node, ast.Assign):
        return any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
    if isinstance(node, ast.AnnAssign):
        return isinstance(node.target, ast.Name) and node.target.id == name
    if isinstance(node, ast.ImportFrom):
        return any((alias.asname or alias.name) == name for alias in node.names)
    return False


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(
    body: Sequence[ast.stmt], type_checking: bool = False
) -> Iterator[tuple[ast.stmt, ast.stmt | None, bool]]:
    """Module-level statements (also inside ``if``/``try``), each with the statement after it
    and whether it sits under ``if TYPE_CHECKING:``."""
    for index, node in enumerate(body):
        following = body[index + 1] if index + 1 < len(body) else None
        if isinstance(node, ast.If):
            yield from _statements(node.body, type_checking or _is_type_checking(node.test))
            yield from _statements(node.orelse, type_checking)
        elif isinstance(node, ast.Try):
            for part in (node.body, node.orelse, node.finalbody):
                yield from _statements(part, type_checking)
        else:
            yield node, following, type_checking


def find_definition(module: str, name: str) -> Definition:
    """Where ``name`` (as seen from ``module``) is bound, following ``from . import`` re-exports
    inside the package.

    Raises:
        LookupError: no statement in ``module`` binds ``name``.
    """
    source = _module_source(module)
    lines = source.splitlines()
    for node, following, type_checking in _statements(ast.parse(source).body):
        if not _binds(node, name):
            continue
        if isinstance(node, ast.ImportFrom):
            alias = next(a for a in node.names if (a.asname or a.name) == name)
            package = module if _is_package(module) else module.rpartition(".")[0]
            target = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                return find_definition(target, alias.name)
        doc = _comment_above(lines, node.lineno)
        if (
            doc is None
            and isinstance(node, ast.Assign | ast.AnnAssign)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            doc = inspect.cleandoc(following.value.value)
        return Definition(module, node, source, type_checking, doc)
    raise LookupError(f"{module} does not bind {name}")


def _export_comment(name: str) -> str | None:
    """A ``#:`` comment above the statement of ``iii_trio/__init__.py`` that exports ``name``."""
    source = _module_source(PACKAGE)
    lines = source.splitlines()
    for node, _, _ in _statements(ast.parse(source).body):
        if isinstance(node, ast.ImportFrom) and _binds(node, name):
            return _comment_above(lines, node.lineno)
    return None


def _one_line(code: str) -> str:
    """A source expression on one line (an alias spread over lines by the formatter)."""
    text = " ".join(code.split())
    text = re.sub(r"([(\[])\s+", r"\1", text)
    text = re.sub(r",?\s+([)\]])", r"\1", text)
    return text


# --- the public names ------------------------------------------------------------------------


@attrs.frozen
class Entry:
    """One name of ``iii_trio.__all__`` and how it is documented."""

    name: str
    obj: object
    #: ``function``, ``class``, ``exception``, ``alias`` or ``constant``.
    kind: str
    #: The module that defines it (for aliases and constants: where the assignment is).
    module: str
    #: For aliases and constants: the binding statement.
    definition: Definition | None = None

    @property
    def section(self) -> str:
        if self.kind == "exception":
            return "Errors"
        if self.kind == "alias":
            return "Type aliases"
        if self.module.startswith(f"{PACKAGE}.engine"):
            return "The engine"
        if self.module.startswith((f"{PACKAGE}.worker", f"{PACKAGE}.protocol")):
            return "Worker SDK"
        return "Utilities"

    @property
    def description(self) -> str | None:
        """The docstring, or for aliases and constants their comment."""
        if self.definition is not None:
            return self.definition.doc or _export_comment(self.name)
        return _own_doc(self.obj)


def _own_doc(obj: object) -> str | None:
    """``obj``'s own docstring (never one inherited from a base class), cleaned."""
    target = obj.fget if isinstance(obj, property) else obj
    doc = getattr(target, "__doc__", None)
    if not isinstance(doc, str) or not doc.strip():
        return None
    return inspect.cleandoc(doc)


def _is_literal(value: object) -> bool:
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return True
    return isinstance(value, tuple | frozenset) and all(_is_literal(v) for v in value)


def entry(name: str) -> Entry:
    """How ``iii_trio.<name>`` is documented."""
    obj = getattr(iii_trio, name)
    named = getattr(obj, "__name__", None) == name
    if inspect.isclass(obj) and named:
        kind = "exception" if issubclass(obj, BaseException) else "class"
        return Entry(name, obj, kind, obj.__module__)
    if callable(obj) and named and not inspect.isclass(obj):
        return Entry(name, obj, "function", getattr(obj, "__module__", PACKAGE))
    definition = find_definition(PACKAGE, name)
    kind = "constant" if _is_literal(obj) else "alias"
    return Entry(name, obj, kind, definition.module, definition)


def entries() -> list[Entry]:
    """Every public name, in reading order: by section, functions before classes."""
    found = [entry(name) for name in iii_trio.__all__]
    ordered: list[Entry] = []
    for section in SECTIONS:
        here = [e for e in found if e.section == section]
        if section == "Errors":
            ordered.extend(_exception_order(here))
            continue
        rank = {"function": 0, "class": 1, "alias": 2, "constant": 3}
        ordered.extend(sorted(here, key=lambda e: (rank[e.kind], e.name.lower(), e.name)))
    return ordered


def _exported_base(cls: type, exported: dict[type, Entry]) -> type | None:
    """The nearest base class of ``cls`` that is itself exported."""
    for base in cls.__mro__[1:]:
        if base in exported:
            return base
    return None


def _exception_order(found: list[Entry]) -> list[Entry]:
    """Exceptions depth-first through the hierarchy, siblings by name."""
    exported = {e.obj: e for e in found if isinstance(e.obj, type)}
    ordered: list[Entry] = []

    def visit(parent: type | None) -> None:
        children = [c for c in exported if _exported_base(c, exported) is parent]
        for child in sorted(children, key=lambda c: c.__name__):
            ordered.append(exported[child])
            visit(child)

    visit(None)
    return ordered


# --- anchors and cross-references ------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = heading.replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|attr|data|exc|mod|obj|const):`(~?)([^`]+)`")
_LITERAL = re.compile(r"``(.+?)``", re.DOTALL)


class Linker:
    """Turns reST roles and literals into Markdown, linking names documented here."""

    def __init__(self, anchors: dict[str, str]) -> None:
        self.anchors = anchors

    def target(self, name: str, owner: str | None = None) -> str | None:
        """The anchor for ``name`` (relative to class ``owner`` if given), if documented."""
        name = name.strip().removeprefix(f"{PACKAGE}.").lstrip(".").removesuffix("()")
        for candidate in ([f"{owner}.{name}"] if owner else []) + [name]:
            if candidate in self.anchors:
                return self.anchors[candidate]
        return None

    def plain(self, name: str, display: str) -> str:
        """``display`` as a plain link to ``name``'s heading, if documented."""
        anchor = self.target(name)
        return f"[{display}](#{anchor})" if anchor else display

    def code(self, name: str, owner: str | None = None, display: str | None = None) -> str:
        """``name`` as inline code, linked when documented."""
        shown = display if display is not None else name
        anchor = self.target(name, owner)
        return f"[`{shown}`](#{anchor})" if anchor else f"`{shown}`"

    def text(self, line: str, owner: str | None = None) -> str:
        def role(match: re.Match[str]) -> str:
            tilde, name = match.group(1), match.group(2)
            bare = name.removeprefix(f"{PACKAGE}.")
            display = bare.rsplit(".", 1)[-1] if tilde else bare
            return self.code(bare, owner, display)

        return _LITERAL.sub(r"`\1`", _ROLE.sub(role, line))


# --- docstrings ------------------------------------------------------------------------------

_SECTION = re.compile(
    r"^(Args|Arguments|Parameters|Returns|Return|Yields|Raises|Attributes|"
    r"Examples?|Notes?|Warnings?|See Also):(?!:)\s*(.*)$"
)
_TITLES: Final = {
    "Args": "Arguments",
    "Parameters": "Arguments",
    "Return": "Returns",
    "Example": "Example",
    "Note": "Note",
    "Warning": "Warning",
}
_ENTRY_SECTIONS: Final = frozenset({"Arguments", "Raises", "Attributes"})
_ENTRY = re.compile(r"^(?P<name>[*\w.,\[\] ]+?)(?:\s*\((?P<type>[^)]*)\))?:(?:\s+(?P<text>.*))?$")


@attrs.define
class Item:
    """One entry of an ``Args:``/``Raises:``/``Attributes:`` section."""

    name: str
    type: str | None
    text: str


@attrs.define
class Section:
    title: str
    lines: list[str]

    def items(self) -> list[Item]:
        found: list[Item] = []
        for line in self.lines:
            if not line.strip():
                continue
            match = _ENTRY.match(line) if not line[:1].isspace() else None
            if match is not None:
                found.append(Item(match["name"].strip(), match["type"], match["text"] or ""))
            elif found:
                found[-1].text = f"{found[-1].text} {line.strip()}".strip()
            else:
                found.append(Item("", None, line.strip()))
        return found


@attrs.define
class Docstring:
    """A docstring split into prose blocks and Google-style sections, in order."""

    parts: list[list[str] | Section]

    @classmethod
    def parse(cls, doc: str | None) -> Docstring:
        parts: list[list[str] | Section] = []
        prose: list[str] = []
        lines = (doc or "").splitlines()
        index = 0
        while index < len(lines):
            match = _SECTION.match(lines[index])
            if match is None:
                prose.append(lines[index])
                index += 1
                continue
            if prose:
                parts.append(prose)
                prose = []
            index += 1
            body: list[str] = []
            while index < len(lines) and (not lines[index].strip() or lines[index][:1].isspace()):
                body.append(lines[index])
                index += 1
            while body and not body[-1].strip():
                body.pop()
            first = [match.group(2)] if match.group(2) else []
            title = _TITLES.get(match.group(1), match.group(1))
            parts.append(Section(title, first + textwrap.dedent("\n".join(body)).splitlines()))
        if prose:
            parts.append(prose)
        return cls(parts)

    def section(self, title: str) -> Section | None:
        for part in self.parts:
            if isinstance(part, Section) and part.title == title:
                return part
        return None


def _fence(lines: Sequence[str], language: str) -> list[str]:
    return ["", f"```{language}", *lines, "```", ""]


def _prose(lines: Sequence[str], link: Linker, owner: str | None) -> list[str]:
    """Docstring prose as Markdown; ``::`` literal blocks become fenced ``text`` blocks."""
    out: list[str] = []
    text: list[str] = []

    def flush() -> None:
        if text:
            out.extend(link.text("\n".join(text), owner).split("\n"))
            text.clear()

    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        block: list[str] = []
        if line.rstrip().endswith("::"):
            while index < len(lines) and (not lines[index].strip() or lines[index][:1].isspace()):
                block.append(lines[index])
                index += 1
        if not any(b.strip() for b in block):
            text.append(line)
            text.extend(block)
            continue
        intro = line.rstrip()[:-2].rstrip()
        if intro:
            text.append(intro + ":")
        flush()
        code = textwrap.dedent("\n".join(block)).strip("\n").splitlines()
        out.extend(_fence(code, "text"))
    flush()
    return out


def _render_section(section: Section, link: Linker, owner: str | None) -> list[str]:
    """A section as Markdown, with a blank line after it (prose that follows must not run on
    into its last list item)."""
    out = ["", f"**{section.title}:**", ""]
    if section.title not in _ENTRY_SECTIONS:
        if section.title.startswith("Example"):
            return [*out[:-1], *_fence(section.lines, "text")]
        return [*out, *link.text("\n".join(section.lines), owner).split("\n"), ""]
    for item in section.items():
        text = link.text(item.text, owner)
        if not item.name:
            out.append(f"- {text}")
            continue
        if section.title == "Raises":
            names = ", ".join(link.code(n.strip()) for n in item.name.split(","))
        else:
            names = f"`{item.name}`"
        kind = f" ({link.text(item.type)})" if item.type else ""
        out.append(f"- {names}{kind}: {text}" if text else f"- {names}{kind}")
    return [*out, ""]


def render_doc(
    doc: str | None, link: Linker, owner: str | None, *, skip: frozenset[str] = frozenset()
) -> list[str]:
    """A whole docstring as Markdown lines (sections in ``skip`` left out)."""
    out: list[str] = []
    for part in Docstring.parse(doc).parts:
        if isinstance(part, Section):
            if part.title not in skip:
                out.extend(_render_section(part, link, owner))
        else:
            out.extend(_prose(part, link, owner))
    return [line for i, line in enumerate(out) if line or (i and out[i - 1])]


# --- signatures ------------------------------------------------------------------------------


def _py_literal(value: object) -> str:
    """``repr``, with double-quoted strings (how the code itself writes them)."""
    if isinstance(value, str):
        text = repr(value)
        if text.startswith("'") and '"' not in value:
            return '"' + text[1:-1].replace("\\'", "'") + '"'
        return text
    if isinstance(value, tuple):
        inner = ", ".join(_py_literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    return repr(value)


def _source_defaults(fn: object) -> dict[str, str]:
    """Parameter defaults as written in the source, for defaults whose repr is useless."""
    try:
        source = textwrap.dedent(inspect.getsource(inspect.unwrap(fn)))  # type: ignore[arg-type]
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return {}
    func = next(
        (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)), None
    )
    if func is None:
        return {}
    args = func.args
    positional = [*args.posonlyargs, *args.args]
    found: dict[str, str] = {}
    for arg, default in zip(
        positional[len(positional) - len(args.defaults) :], args.defaults, strict=True
    ):
        found[arg.arg] = ast.get_source_segment(source, default) or "..."
    for arg, kw_default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        if kw_default is not None:
            found[arg.arg] = ast.get_source_segment(source, kw_default) or "..."
    return found


def _annotation(annotation: object) -> str:
    if isinstance(annotation, str):
        return annotation
    return inspect.formatannotation(annotation)


def _default(value: object, source: str | None) -> str:
    if _is_literal(value):
        return _py_literal(value)
    if source is not None:
        return source
    text = repr(value)
    return "..." if " at 0x" in text or value is attrs.NOTHING else text


def _parameters(signature: inspect.Signature, defaults: dict[str, str]) -> list[str]:
    out: list[str] = []
    star_done = False
    previous: inspect._ParameterKind | None = None
    for param in signature.parameters.values():
        kind = param.kind
        if previous is inspect.Parameter.POSITIONAL_ONLY and kind is not previous:
            out.append("/")
        if kind is inspect.Parameter.KEYWORD_ONLY and not star_done:
            out.append("*")
            star_done = True
        text = param.name
        if kind is inspect.Parameter.VAR_POSITIONAL:
            text = "*" + text
            star_done = True
        elif kind is inspect.Parameter.VAR_KEYWORD:
            text = "**" + text
        if param.annotation is not inspect.Parameter.empty:
            text += f": {_annotation(param.annotation)}"
        if param.default is not inspect.Parameter.empty:
            joiner = " = " if param.annotation is not inspect.Parameter.empty else "="
            text += joiner + _default(param.default, defaults.get(param.name))
        out.append(text)
        previous = kind
    if previous is inspect.Parameter.POSITIONAL_ONLY:
        out.append("/")
    return out


def _header(prefix: str, name: str, params: list[str], returns: str | None) -> list[str]:
    """``prefix name(params) -> returns``, wrapped one parameter per line when long."""
    tail = f" -> {returns}" if returns else ""
    line = f"{prefix}{name}({', '.join(params)}){tail}"
    if len(line) <= SIGNATURE_WIDTH or not params:
        return [line]
    return [f"{prefix}{name}(", *(f"    {p}," for p in params), f"){tail}"]


def _signature(obj: object) -> inspect.Signature | None:
    try:
        return inspect.signature(obj)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _function_block(fn: object, name: str, *, decorators: Sequence[str] = ()) -> list[str]:
    """A colon-less ``def`` header for ``fn`` in a ``python`` block."""
    unwrapped = inspect.unwrap(fn)  # type: ignore[arg-type]
    lines = list(decorators)
    if unwrapped is not fn and inspect.isasyncgenfunction(unwrapped):
        lines.append("@asynccontextmanager")
    is_async = inspect.iscoroutinefunction(unwrapped) or inspect.isasyncgenfunction(unwrapped)
    prefix = "async def " if is_async else "def "
    signature = _signature(fn)
    if signature is None:
        lines.append(f"{prefix}{name}(...)")
    else:
        returns = signature.return_annotation
        lines.extend(
            _header(
                prefix,
                name,
                _parameters(signature, _source_defaults(fn)),
                None if returns is inspect.Signature.empty else _annotation(returns),
            )
        )
    return _fence(lines, "python")


def _public_path(cls: type) -> str:
    """How users name a base class: ``Exception``, ``trio.abc.SendStream``, ``Worker``."""
    module = cls.__module__
    if module == "builtins" or module.startswith(PACKAGE):
        return cls.__qualname__
    top = module.split(".")[0]
    for path in (top, f"{top}.abc"):
        namespace = sys.modules.get(path)
        if namespace is not None and getattr(namespace, cls.__name__, None) is cls:
            return f"{path}.{cls.__name__}"
    return f"{module}.{cls.__qualname__}"


def _bases(cls: type) -> list[type]:
    return [b for b in cls.__bases__ if b is not object and b.__name__ != "Generic"]


def _is_protocol(cls: type) -> bool:
    return bool(getattr(cls, "_is_protocol", False))


def _class_block(cls: type) -> list[str]:
    """``class Name(constructor parameters)``, as it is called: the parameters of the package's
    own ``__init__`` (not of a metaclass that may guard it), else whatever ``inspect`` finds."""
    if _is_protocol(cls):
        return _fence([f"class {cls.__name__}"], "python")
    owner = next((c for c in cls.__mro__ if "__init__" in c.__dict__), object)
    init = owner.__dict__.get("__init__")
    signature = None
    if init is not None and owner.__module__.startswith(PACKAGE):
        signature = _signature(init)
        if signature is not None:
            parameters = list(signature.parameters.values())[1:]  # self
            signature = signature.replace(parameters=parameters)
    if signature is None:
        signature = _signature(cls)
    if signature is None:
        return _fence([f"class {cls.__name__}"], "python")
    params = _parameters(
        signature.replace(return_annotation=inspect.Signature.empty), _source_defaults(init)
    )
    return _fence(_header("class ", cls.__name__, params, None), "python")


# --- attributes ------------------------------------------------------------------------------


@attrs.define
class Attribute:
    name: str
    type: str | None
    text: str
    default: str | None = None


def _comment_attributes(cls: type) -> dict[str, Attribute]:
    """``#:``-commented class-level fields and ``self.x`` assignments in ``__init__``."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    lines = source.splitlines()
    tree = ast.parse(source)
    found: dict[str, Attribute] = {}
    classdef = next((n for n in tree.body if isinstance(n, ast.ClassDef)), None)
    if classdef is None:
        return found
    for node in classdef.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            doc = _comment_above(lines, node.lineno)
            if doc:
                found[node.target.id] = Attribute(node.target.id, ast.unparse(node.annotation), doc)
        if isinstance(node, ast.FunctionDef) and node.name == "__init__":
            for stmt in ast.walk(node):
                if not isinstance(stmt, ast.Assign | ast.AnnAssign):
                    continue
                target: ast.expr = (
                    stmt.target if isinstance(stmt, ast.AnnAssign) else stmt.targets[0]
                )
                annotation = (
                    ast.unparse(stmt.annotation) if isinstance(stmt, ast.AnnAssign) else None
                )
                if (
                    isinstance(target, ast.Attribute)
                    and isinstance(target.value, ast.Name)
                    and target.value.id == "self"
                    and not target.attr.startswith("_")
                ):
                    doc = _comment_above(lines, stmt.lineno)
                    if doc:
                        found[target.attr] = Attribute(target.attr, annotation, doc)
    return found


def attributes(cls: type) -> list[Attribute]:
    """The attributes ``cls`` documents itself: attrs fields (all public ones, described or
    not), ``Attributes:`` entries and ``#:`` comments."""
    described: dict[str, Attribute] = {}
    section = Docstring.parse(_own_doc(cls)).section("Attributes")
    for item in section.items() if section else []:
        for name in item.name.split(","):
            described[name.strip()] = Attribute(name.strip(), item.type, item.text)
    for name, attr in _comment_attributes(cls).items():
        described.setdefault(name, attr)
    if not attrs.has(cls):
        return list(described.values())
    out: list[Attribute] = []
    for field in attrs.fields(cls):
        if field.name.startswith("_"):
            continue
        info = described.pop(field.name, None)
        if field.default is attrs.NOTHING:
            default = None
        elif isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
            factory = getattr(field.default, "factory", None)
            default = f"{getattr(factory, '__name__', 'factory')}()"
        else:
            default = _py_literal(field.default)
        kind = field.type if isinstance(field.type, str) else None
        if kind is None and field.type is not None:
            kind = _annotation(field.type)
        out.append(Attribute(field.name, kind, info.text if info else "", default))
    return out + list(described.values())


def _size(default: str) -> str:
    """`` (80 MiB)`` after a default that is a whole number of MiB."""
    mib = 1024 * 1024
    if default.isdigit() and int(default) >= mib and int(default) % mib == 0:
        return f" ({int(default) // mib} MiB)"
    return ""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _attribute_table(cls: type, link: Linker) -> list[str]:
    found = attributes(cls)
    if not found:
        return []
    owner = cls.__name__
    if attrs.has(cls):
        kw = all(f.kw_only for f in attrs.fields(cls) if f.init)
        intro = "Fields (keyword-only):" if kw else "Fields:"
        rows = ["| field | type | default | description |", "|---|---|---|---|"]
        for a in found:
            default = (
                f"`{_cell(a.default)}`{_size(a.default)}" if a.default is not None else "required"
            )
            kind = f"`{_cell(a.type)}`" if a.type else ""
            rows.append(f"| `{a.name}` | {kind} | {default} | {_cell(link.text(a.text, owner))} |")
    else:
        intro = "Attributes:"
        if any(a.type for a in found):
            rows = ["| attribute | type | description |", "|---|---|---|"]
            for a in found:
                kind = f"`{_cell(a.type)}`" if a.type else ""
                rows.append(f"| `{a.name}` | {kind} | {_cell(link.text(a.text, owner))} |")
        else:
            rows = ["| attribute | description |", "|---|---|"]
            rows.extend(f"| `{a.name}` | {_cell(link.text(a.text, owner))} |" for a in found)
    return ["", f"**{intro}**", "", *rows]


def _inherited_attributes(cls: type, link: Linker) -> list[str]:
    """A line per package base class whose attributes ``cls`` has but does not describe."""
    seen = {a.name for a in attributes(cls)}
    out: list[str] = []
    for base in cls.__mro__[1:]:
        if not base.__module__.startswith(PACKAGE):
            continue
        names = [a.name for a in attributes(base) if a.name not in seen]
        if names:
            seen.update(names)
            listed = ", ".join(f"`{n}`" for n in names)
            out.append(f"Also has the attributes of {link.code(base.__name__)}: {listed}.")
    return ["", *out] if out else []


# --- members ---------------------------------------------------------------------------------


def members(cls: type) -> list[tuple[str, object]]:
    """Public methods and properties defined by ``cls`` itself, in source order (plus a
    ``__call__``)."""
    found: list[tuple[str, object]] = []
    for name, value in vars(cls).items():
        if name.startswith("_") and name != "__call__":
            continue
        if isinstance(value, staticmethod | classmethod):
            value = value.__func__
        if isinstance(value, property) or inspect.isfunction(value):
            found.append((name, value))
    return found


def _alias_of(cls: type, name: str, value: object) -> str | None:
    """For ``write = send_all`` in a class body: ``send_all``."""
    original = getattr(value, "__name__", name)
    if original != name and vars(cls).get(original) is value:
        return str(original)
    return None


def _member_lines(cls: type, name: str, value: object, link: Linker) -> list[str]:
    owner = cls.__name__
    heading = f"#### `{owner}.{name}`"
    original = _alias_of(cls, name, value)
    if original is not None:
        return [heading, "", f"Same as {link.code(f'{owner}.{original}')}.", ""]
    if isinstance(value, property):
        assert value.fget is not None
        block = _function_block(value.fget, name, decorators=["@property"])
    else:
        block = _function_block(value, name)
    return [heading, *block, *render_doc(_own_doc(value), link, owner), ""]


# --- sections --------------------------------------------------------------------------------


def _class_lines(e: Entry, link: Linker) -> list[str]:
    cls = e.obj
    assert isinstance(cls, type)
    out = [f"### `{e.name}`", *_class_block(cls)]
    bases = _bases(cls)
    if bases and not (len(bases) == 1 and _is_protocol(cls) and bases[0].__name__ == "Protocol"):
        listed = ", ".join(link.code(_public_path(b)) for b in bases)
        out.extend([f"Bases: {listed}", ""])
    elif _is_protocol(cls):
        out.extend(["A `typing.Protocol`: implement these methods (no need to subclass).", ""])
    out.extend(render_doc(e.description, link, e.name, skip=frozenset({"Attributes"})))
    out.extend(_attribute_table(cls, link))
    out.extend(_inherited_attributes(cls, link))
    out.append("")
    for name, value in members(cls):
        out.extend(_member_lines(cls, name, value, link))
    return out


def _entry_lines(e: Entry, link: Linker) -> list[str]:
    if e.kind in ("class", "exception"):
        return _class_lines(e, link)
    if e.kind == "function":
        return [
            f"### `{e.name}`",
            *_function_block(e.obj, e.name),
            *render_doc(e.description, link, None),
            "",
        ]
    definition = e.definition
    assert definition is not None
    node = definition.node
    if e.kind == "constant":
        shown = f"{e.name} = {_py_literal(e.obj)}"
    else:
        value = node.value if isinstance(node, ast.Assign | ast.AnnAssign) else None
        code = ast.get_source_segment(definition.source, value) if value is not None else None
        shown = f"{e.name} = {_one_line(code) if code else '...'}"
    out = [f"### `{e.name}`", "", f"`{shown}`", ""]
    out.extend(render_doc(e.description, link, None))
    if definition.type_checking:
        runtime = getattr(e.obj, "__name__", repr(e.obj))
        out.extend(
            [
                "",
                f"For type checkers only: at run time `{PACKAGE}.{e.name}` is `{runtime}`.",
            ]
        )
    return [*out, ""]


def _errors_tree(found: list[Entry], link: Linker) -> list[str]:
    exported = {e.obj: e for e in found if isinstance(e.obj, type)}
    out: list[str] = []
    for e in found:
        cls = e.obj
        assert isinstance(cls, type)
        depth = 0
        parent = _exported_base(cls, exported)
        while parent is not None:
            depth += 1
            parent = _exported_base(parent, exported)
        outside = ""
        if depth == 0:
            outside = " (" + ", ".join(f"`{_public_path(b)}`" for b in _bases(cls)) + ")"
        out.append(f"{'  ' * depth}- {link.code(e.name)}{outside}")
    return out


# --- fixtures --------------------------------------------------------------------------------


@attrs.frozen
class Fixture:
    name: str
    node: ast.FunctionDef | ast.AsyncFunctionDef


def fixtures() -> tuple[str | None, list[Fixture], dict[str, str]]:
    """The plugin module's docstring, its fixtures, and the module-level aliases they use."""
    tree = ast.parse(_module_source(PLUGIN_MODULE))
    found: list[Fixture] = []
    aliases: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and any(
            ast.unparse(d).split("(")[0] in ("pytest.fixture", "fixture")
            for d in node.decorator_list
        ):
            found.append(Fixture(node.name, node))
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                aliases[target.id] = ast.unparse(node.value)
    return ast.get_docstring(tree), found, aliases


def _fixture_lines(fixture: Fixture, aliases: dict[str, str], link: Linker) -> list[str]:
    node = fixture.node
    params = [
        a.arg + (f": {ast.unparse(a.annotation)}" if a.annotation else "") for a in node.args.args
    ]
    returns = ast.unparse(node.returns) if node.returns else None
    prefix = "async def " if isinstance(node, ast.AsyncFunctionDef) else "def "
    block = _fence(["@pytest.fixture", *_header(prefix, node.name, params, returns)], "python")
    annotations = [a.annotation for a in node.args.args if a.annotation is not None]
    if node.returns is not None:
        annotations.append(node.returns)
    used = sorted(
        {
            n.id
            for a in annotations
            for n in ast.walk(a)
            if isinstance(n, ast.Name) and n.id in aliases
        }
    )
    out = [f"### `{fixture.name}`", *block]
    out.extend(_prose(inspect.cleandoc(ast.get_docstring(node) or "").splitlines(), link, None))
    for name in used:
        out.extend(["", f"`{name} = {aliases[name]}`"])
    return [*out, ""]


# --- the document ----------------------------------------------------------------------------


def _document(link: Linker) -> list[str]:
    found = entries()
    module_doc, plugin_fixtures, plugin_aliases = fixtures()
    by_section = {s: [e for e in found if e.section == s] for s in SECTIONS}
    out = [
        "# API reference",
        "",
        "Everything below is importable from `iii_trio` (`from iii_trio import Worker`); the",
        "pytest fixtures come with the package's pytest plugin. Generated from the code by",
        "`python docs/gen_api.py > docs/api.md` (do not edit by hand; `tests/test_docs.py` checks",
        "that it is current). The wire protocol, every error code and close code:",
        "[protocol.md](protocol.md).",
        "",
        "## Contents",
        "",
    ]
    for section in SECTIONS:
        if by_section[section]:
            names = ", ".join(link.code(e.name) for e in by_section[section])
            out.append(f"- {link.plain(f'section:{section}', section)}: {names}")
    fixture_names = ", ".join(link.code(f.name) for f in plugin_fixtures)
    section_link = link.plain(f"section:{FIXTURES_SECTION}", FIXTURES_SECTION)
    out.extend([f"- {section_link}: {fixture_names}", ""])
    for section in SECTIONS:
        if not by_section[section]:
            continue
        out.extend([f"## {section}", ""])
        if section == "Errors":
            tree = _errors_tree(by_section[section], link)
            out.extend(["The hierarchy (exported classes only):", "", *tree, ""])
        for e in by_section[section]:
            out.extend(_entry_lines(e, link))
    out.extend([f"## {FIXTURES_SECTION}", ""])
    out.extend(_prose((module_doc or "").splitlines(), link, None))
    out.append("")
    for fixture in plugin_fixtures:
        out.extend(_fixture_lines(fixture, plugin_aliases, link))
    return out


def _anchors(lines: Sequence[str]) -> dict[str, str]:
    """Each heading's anchor as GitHub makes it (repeats get ``-1``, ``-2``, ...), by what the
    heading names: ``Worker``, ``Worker.trigger``, ``section:Errors``."""
    occurrences: dict[str, int] = {}
    found: dict[str, str] = {}
    in_fence = False
    for line in lines:
        if line.startswith("```"):
            in_fence = not in_fence
        if in_fence or not line.startswith("#"):
            continue
        text = line.lstrip("#").strip()
        anchor = original = slug(text)
        while anchor in occurrences:
            occurrences[original] += 1
            anchor = f"{original}-{occurrences[original]}"
        occurrences[anchor] = 0
        key = text[1:-1] if text.startswith("`") and text.endswith("`") else f"section:{text}"
        found.setdefault(key, anchor)
    return found


def render() -> str:
    """docs/api.md: rendered twice, the second time with links to the first one's headings."""
    anchors = _anchors(_document(Linker({})))
    return _tidy(_document(Linker(anchors)))


def _tidy(lines: list[str]) -> str:
    """Join, with no trailing spaces and no runs of blank lines."""
    text = "\n".join(line.rstrip() for line in lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip() + "\n"


# --- what is not documented yet (tests/test_docs.py keeps this list from growing) -------------


def gaps() -> list[str]:
    """Public names, members, fields and attributes with no description, one line each."""
    found: list[str] = []
    for e in entries():
        if not e.description:
            found.append(f"{e.name}: no description")
        if not isinstance(e.obj, type) or e.kind not in ("class", "exception"):
            continue
        for name, value in members(e.obj):
            if _alias_of(e.obj, name, value) is None and not _own_doc(value):
                found.append(f"{e.name}.{name}: no docstring")
        for attribute in attributes(e.obj):
            if not attribute.text:
                found.append(f"{e.name}.{attribute.name}: field has no description")
    return sorted(found)


if __name__ == "__main__":
    sys.stdout.write(render())
