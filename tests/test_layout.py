"""The house in order (issue 12): no import circles between iii_trio's modules, and no module
over 600 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import iii_trio

PACKAGE = Path(iii_trio.__file__).parent
MAX_LINES = 600


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Modules of iii_trio that ``path`` imports at module level, ``TYPE_CHECKING`` blocks
    included (a circle only the type checker sees is still two modules that know each other;
    imports inside functions are left out)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    name = _module(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("iii_trio"))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package
                    for _ in range(node.level - 1):
                        base = base.rpartition(".")[0]
                    target = f"{base}.{node.module}" if node.module else base
                else:
                    target = node.module or ""
                if not target.startswith("iii_trio"):
                    continue
                for alias in node.names:
                    candidate = f"{target}.{alias.name}"
                    found.add(candidate if _exists(candidate) else target)
            elif isinstance(node, ast.If | ast.Try | ast.TryStar | ast.With):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                visit(getattr(node, "finalbody", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(tree.body)
    found.discard(name)
    return found


def _exists(module: str) -> bool:
    base = PACKAGE.parent / Path(*module.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _graph() -> dict[str, set[str]]:
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        graph[_module(path)] = _imports(path)
    return graph


def test_no_import_circles_between_private_modules() -> None:
    # A package's __init__ re-exports its modules, so "x/__init__ -> x._a -> x" is not a
    # circle that matters; edges *into* a package __init__ from inside it are left out.
    graph = _graph()
    packages = {name for name in graph if (PACKAGE.parent / Path(*name.split("."))).is_dir()}
    edges = {
        name: {t for t in targets if not (t in packages and name.startswith(t + "."))}
        for name, targets in graph.items()
    }
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                walk(target, [*path, target])
        state[node] = 2

    for name in sorted(edges):
        if name not in state:
            walk(name, [name])
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_module_is_over_600_lines() -> None:
    long = {
        str(path.relative_to(PACKAGE.parent)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, long
