"""The public surface is deliberate (STYLE G16): ``iii_trio.__all__`` is pinned here, nothing
public hides outside it, and every name a public signature mentions can be imported from
``iii_trio`` (or is a builtin, standard-library, ``typing`` or trio name).

Names are read from the annotation *strings* (every module has ``from __future__ import
annotations``): ``typing.get_type_hints`` would expand an alias such as ``Dialer`` into
``Callable[[], Awaitable[trio.abc.Stream]]`` and hide the name a reader sees.
``get_type_hints`` is still run on every annotation, to check that each one resolves.
"""

from __future__ import annotations
import __future__

import ast
import builtins
import importlib.util
import inspect
import sys
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import iii_trio

ROOT = Path(__file__).parents[1]

#: ``sorted(iii_trio.__all__)``. Adding or removing a public name means changing this list.
EXPECTED_ALL = [
    "Action",
    "ActionEnqueue",
    "ActionVoid",
    "Channel",
    "ChannelAborted",
    "ChannelBroken",
    "ChannelExpired",
    "ChannelLost",
    "ChannelReader",
    "ChannelReaderClosed",
    "ChannelRefused",
    "ChannelWriter",
    "ConnectError",
    "Dialer",
    "Direction",
    "Engine",
    "EngineConfig",
    "EngineStatistics",
    "EngineUnreachable",
    "FunctionNotFound",
    "FunctionRef",
    "Handler",
    "HandshakeRefused",
    "HttpHandler",
    "HttpRequest",
    "HttpResponse",
    "IIIError",
    "InvocationError",
    "InvocationFailed",
    "InvocationStopped",
    "InvocationTimeout",
    "JSON",
    "LocalDialer",
    "LocalProtocolError",
    "MessageCallback",
    "Progress",
    "ProtocolError",
    "ReaderCall",
    "RegistrationRejected",
    "RemoteProtocolError",
    "StreamChannelRef",
    "TriggerBinding",
    "TriggerError",
    "TriggerHandler",
    "TriggerRef",
    "TriggerTypeRef",
    "Unauthorized",
    "Worker",
    "WorkerDisconnected",
    "WorkerOverloaded",
    "WriterCall",
    "__version__",
    "connect_worker",
    "http_handler",
    "open_engine",
    "receive_file",
    "send_file",
    "serve_engine",
    "tune_allocator",
]

#: Public signatures that still mention private types, by callable: SDK plumbing that is to
#: become private, and constructors of objects only the SDK makes (factory-only, G16). Make
#: one private (or export what it names) and remove it here.
KNOWN_INTERNAL: dict[str, set[str]] = {
    "ChannelReader.__init__": {"ChannelEndpoint"},
    "ChannelWriter.__init__": {"ChannelEndpoint"},
    "LocalDialer.open_websocket": {"MessageSocket"},
    "TriggerBinding.__init__": {"RegisterTrigger", "Trigger"},
    "TriggerRef.__init__": {"RegisterTrigger", "WorkerTriggers"},
    "TriggerTypeRef.__init__": {"WorkerTriggers"},
}

#: Top-level packages whose names may appear in public signatures without being re-exported.
ALLOWED_PACKAGES = frozenset(sys.stdlib_module_names) | {"builtins", "trio"}

_MISSING = object()


def _gen_api() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_api", ROOT / "docs" / "gen_api.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_all_is_pinned() -> None:
    assert sorted(EXPECTED_ALL) == EXPECTED_ALL
    assert len(set(iii_trio.__all__)) == len(iii_trio.__all__), "a name is listed twice"
    assert sorted(iii_trio.__all__) == EXPECTED_ALL, (
        "iii_trio.__all__ changed: if that is deliberate, update EXPECTED_ALL "
        f"(added {sorted(set(iii_trio.__all__) - set(EXPECTED_ALL))}, "
        f"removed {sorted(set(EXPECTED_ALL) - set(iii_trio.__all__))})"
    )


def test_nothing_public_outside_all() -> None:
    stray = {
        name
        for name, value in vars(iii_trio).items()
        if not name.startswith("_")
        and not inspect.ismodule(value)
        and not isinstance(value, __future__._Feature)  # `from __future__ import annotations`
    } - set(iii_trio.__all__)
    assert not stray, f"public names not in __all__: {sorted(stray)}"
    namespace: dict[str, object] = {}
    exec("from iii_trio import *", namespace)
    del namespace["__builtins__"]
    assert sorted(namespace) == sorted(iii_trio.__all__)


# --- what the public signatures mention ------------------------------------------------------


def _init_of(cls: type) -> tuple[Callable[..., object], type] | None:
    """The ``__init__`` that builds ``cls`` and the class defining it, if it is ours."""
    for klass in cls.__mro__:
        if "__init__" in klass.__dict__:
            if not klass.__module__.startswith("iii_trio"):
                return None
            init: Callable[..., object] = klass.__dict__["__init__"]
            return init, klass
    return None


def public_callables() -> Iterator[tuple[str, Callable[..., object], ModuleType]]:
    """``(qualified name, function, module it was written in)`` for every public function,
    constructor, method and property getter."""
    for name in iii_trio.__all__:
        obj = getattr(iii_trio, name)
        if inspect.isclass(obj) and obj.__name__ == name:
            found = _init_of(obj)
            if found is not None and not getattr(obj, "_is_protocol", False):
                yield f"{name}.__init__", found[0], sys.modules[found[1].__module__]
            module = sys.modules[obj.__module__]
            for member, value in vars(obj).items():
                if member.startswith("_") and member != "__call__":
                    continue
                if isinstance(value, staticmethod | classmethod):
                    value = value.__func__
                if isinstance(value, property):
                    value = value.fget
                if inspect.isfunction(value):
                    yield f"{name}.{member}", value, module
        elif inspect.isfunction(inspect.unwrap(obj)):
            function = inspect.unwrap(obj)
            yield name, function, sys.modules[function.__module__]


def _names(annotation: str) -> Iterator[str]:
    """The names an annotation string mentions (the first part of dotted ones), including
    those inside quoted forward references (but not the strings of a ``Literal``)."""
    yield from _walk(ast.parse(annotation, mode="eval").body)


def _walk(node: ast.AST) -> Iterator[str]:
    if isinstance(node, ast.Name):
        yield node.id
    elif isinstance(node, ast.Attribute):
        yield from _walk(node.value)
    elif isinstance(node, ast.Constant):
        if isinstance(node.value, str):
            yield from _names(node.value)
    elif isinstance(node, ast.Subscript):
        yield from _walk(node.value)
        head = node.value
        if not (
            isinstance(head, ast.Name | ast.Attribute) and ast.unparse(head).endswith("Literal")
        ):
            yield from _walk(node.slice)
    else:
        for child in ast.iter_child_nodes(node):
            yield from _walk(child)


def _resolve(name: str, module: ModuleType) -> object:
    value = vars(module).get(name, _MISSING)
    if value is _MISSING:
        value = getattr(builtins, name, _MISSING)
    if value is _MISSING and name in iii_trio.__all__:
        value = getattr(iii_trio, name)  # imported under TYPE_CHECKING only
    return value


def _importable(name: str, value: object) -> bool:
    if name in iii_trio.__all__ and getattr(iii_trio, name) is value:
        return True
    if inspect.ismodule(value):
        return value.__name__.split(".")[0] in ALLOWED_PACKAGES
    if isinstance(value, typing.TypeVar):
        return True  # a placeholder, not a type to import
    if getattr(builtins, name, _MISSING) is value:
        return True
    # A named class or special form of an allowed package, under its own name (not an alias:
    # ``JSON`` is ``object`` at run time, but ``object`` is not what the signature says).
    module = getattr(value, "__module__", None)
    return (
        isinstance(module, str)
        and module.split(".")[0] in ALLOWED_PACKAGES
        and getattr(value, "__name__", None) == name
    )


def _annotations() -> Iterator[tuple[str, str, ModuleType]]:
    """``(where, annotation string, module to resolve it in)``, for every public signature
    and attrs field, and the definition of every public type alias."""
    for qualname, function, module in public_callables():
        for annotation in function.__annotations__.values():
            if isinstance(annotation, str):
                yield qualname, annotation, module
    gen_api = _gen_api()
    for name in iii_trio.__all__:
        entry = gen_api.entry(name)
        definition = entry.definition
        if entry.kind == "alias" and definition is not None:
            value = definition.node.value
            source = ast.get_source_segment(definition.source, value)
            assert source is not None
            yield name, source, sys.modules[definition.module]


def test_signature_names_are_importable() -> None:
    unexported: dict[str, set[str]] = {}
    for where, annotation, module in _annotations():
        for name in _names(annotation):
            value = _resolve(name, module)
            assert value is not _MISSING, f"{where}: {name!r} does not resolve in {module}"
            if not _importable(name, value):
                unexported.setdefault(where, set()).add(name)
    new = {k: v for k, v in unexported.items() if KNOWN_INTERNAL.get(k) != v}
    assert not new, (
        "public signatures mention names that `iii_trio` does not export; export them "
        f"(from ._x import Y as Y, and __all__) or make the callable private: {new}"
    )
    fixed = sorted(set(KNOWN_INTERNAL) - set(unexported))
    assert not fixed, f"no longer mention private types: remove them from KNOWN_INTERNAL: {fixed}"


def test_public_annotations_resolve() -> None:
    # What documentation tools and runtime checkers do: every annotation evaluates, using
    # the public namespace for names imported only under TYPE_CHECKING.
    public = {name: getattr(iii_trio, name) for name in iii_trio.__all__}
    failures = []
    for qualname, function, _ in public_callables():
        try:
            typing.get_type_hints(function)
        except NameError:
            try:
                typing.get_type_hints(function, localns=public)
            except NameError as exc:
                failures.append(f"{qualname}: {exc}")
    assert not failures
