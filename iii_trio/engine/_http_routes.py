"""The HTTP routes bound with the ``http`` trigger type, and how a request finds one.
Synchronous, no I/O.

Theory of operation
-------------------
A binding's config names a path pattern and a method (iii's ``api_path``/``http_method``). A
pattern is a list of segments, each either a literal or a ``:name`` parameter that takes one
whole segment; a leading ``/`` is optional and a trailing ``/`` counts (``a/`` is not ``a``).

The table is a trie over *shapes*: a route's shape is its segments with every parameter name
forgotten, so ``users/:id`` and ``users/:name`` share one node. Each node keeps, per method,
the route that owns it. The rules, as iii's:

* the same method and pattern again replaces the route silently (the key is ``METHOD path``);
* the same method and shape with other parameter names is refused with iii's exact message,
  and the first route keeps serving (iii's router cannot tell such routes apart either);
* a literal segment beats a parameter at the same place; matching backtracks, so
  ``a/b/c`` still reaches ``a/:x/c`` when ``a/b`` leads nowhere;
* a path some route's shape matches, with no route for the method, is a 405 (the allowed
  methods are known); any other path is a 404.

Path parameter values are handed on raw (not percent-decoded), as iii does. Routes of
different methods may name their parameters differently (iii's router would refuse some of
those combinations at run time; ours tells them apart by method).
"""

from __future__ import annotations

from typing import Final, final

import attrs

from ..protocol import JSON

#: The methods a binding may name (iii's list); any case is accepted and upper-cased.
METHODS: Final = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})


class RouteError(Exception):
    """A binding's config cannot be served (the message is for the binder)."""


@final
@attrs.frozen
class Route:
    """One bound route.

    Attributes:
        method: upper-case HTTP method.
        path: the pattern without its leading ``/`` (as iii reports it in ``path``).
        segments: the pattern's segments; a parameter is ``:name``.
        function_id: the function it calls.
        binding_id: the trigger that bound it.
        middleware: function ids run before the handler, in order.
        condition: a function whose ``false`` answer refuses the request (422).
        metadata: the binding's metadata (sent with each invocation).
    """

    method: str
    path: str
    segments: tuple[str, ...]
    function_id: str
    binding_id: str
    middleware: tuple[str, ...] = ()
    condition: str | None = None
    metadata: JSON = None

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def shape(self) -> tuple[str | None, ...]:
        return tuple(None if s.startswith(":") else s for s in self.segments)

    def params(self, values: tuple[str, ...]) -> dict[str, str]:
        """The path parameters of a request whose segments matched this route."""
        return {
            seg[1:]: value
            for seg, value in zip(self.segments, values, strict=True)
            if seg[:1] == ":"
        }


def split_path(path: str) -> tuple[str, ...]:
    """A pattern or request path as segments (leading ``/`` optional, a trailing one counts:
    ``"a/"`` is ``("a", "")``; the root is ``()``)."""
    if path.startswith("/"):
        path = path[1:]
    return tuple(path.split("/")) if path else ()


def route_from_config(binding_id: str, function_id: str, config: JSON, metadata: JSON) -> Route:
    """The route an ``http`` binding asks for.

    Raises:
        RouteError: no ``api_path``, an unknown method, or malformed middleware ids.
    """
    if not isinstance(config, dict):
        raise RouteError("an http trigger needs a config object with 'api_path'")
    api_path = config.get("api_path")
    if not isinstance(api_path, str):
        raise RouteError("an http trigger needs 'api_path' (a string)")
    method_value = config.get("http_method", "GET")
    method = method_value.upper() if isinstance(method_value, str) else ""
    if method not in METHODS:
        raise RouteError(
            f"unsupported http_method {method_value!r} (one of {', '.join(sorted(METHODS))})"
        )
    segments = split_path(api_path)
    for seg in segments:
        if seg == ":":
            raise RouteError(f"api_path {api_path!r} has a parameter without a name")
    middleware = config.get("middleware_function_ids") or []
    if not isinstance(middleware, list) or not all(isinstance(m, str) for m in middleware):
        raise RouteError("'middleware_function_ids' must be a list of function ids")
    condition = config.get("condition_function_id")
    if condition is not None and not isinstance(condition, str):
        raise RouteError("'condition_function_id' must be a function id")
    return Route(
        method=method,
        path="/".join(segments),
        segments=segments,
        function_id=function_id,
        binding_id=binding_id,
        middleware=tuple(str(m) for m in middleware),
        condition=condition or None,
        metadata=metadata,
    )


@final
@attrs.define(eq=False)
class _Node:
    literals: dict[str, _Node] = attrs.field(factory=dict)
    param: _Node | None = None
    routes: dict[str, Route] = attrs.field(factory=dict)


@final
@attrs.frozen
class Match:
    """A route found for a request."""

    route: Route
    path_params: dict[str, str]


@final
@attrs.frozen
class WrongMethod:
    """The path exists, but not for that method (405): the methods it has."""

    allowed: tuple[str, ...]


@final
class RouteTable:
    """The routes of the engine's HTTP server, by shape and method."""

    def __init__(self) -> None:
        self._root = _Node()
        self._by_binding: dict[str, Route] = {}

    def __len__(self) -> int:
        return len(self._by_binding)

    def get(self, binding_id: str) -> Route | None:
        return self._by_binding.get(binding_id)

    def add(self, route: Route) -> Route | None:
        """Serve ``route``; returns the route it replaced (same method and pattern), if any.

        Raises:
            RouteError: a route of the same method and shape names its parameters
                differently (iii's message, word for word).
        """
        node = self._root
        for seg in route.shape:
            if seg is None:
                if node.param is None:
                    node.param = _Node()
                node = node.param
            else:
                node = node.literals.setdefault(seg, _Node())
        current = node.routes.get(route.method)
        if current is not None and current.segments != route.segments:
            raise RouteError(
                f"Route '{route.key}' conflicts with already-registered route "
                f"'{current.key}': routes with identical structure but different "
                "path-parameter names are not supported"
            )
        previous = self._by_binding.pop(route.binding_id, None)
        if previous is not None and previous is not current:
            self._remove_route(previous)
        if current is not None:
            self._by_binding.pop(current.binding_id, None)
        node.routes[route.method] = route
        self._by_binding[route.binding_id] = route
        return current

    def remove(self, binding_id: str) -> Route | None:
        """Stop serving the route ``binding_id`` bound, if it still owns it."""
        route = self._by_binding.pop(binding_id, None)
        if route is not None:
            self._remove_route(route)
        return route

    def _remove_route(self, route: Route) -> None:
        path: list[tuple[_Node, str | None]] = []
        node: _Node | None = self._root
        for seg in route.shape:
            assert node is not None
            path.append((node, seg))
            node = node.param if seg is None else node.literals.get(seg)
        if node is None or node.routes.get(route.method) is not route:
            return
        del node.routes[route.method]
        # Prune the branch back to the first node still in use.
        for parent, seg in reversed(path):
            if node.routes or node.literals or node.param is not None:
                break
            if seg is None:
                parent.param = None
            else:
                del parent.literals[seg]
            node = parent

    def match(self, method: str, path: str) -> Match | WrongMethod | None:
        """The route for ``method`` and the request path (without its query); a
        :class:`WrongMethod` when the path exists for other methods only; ``None`` (404)."""
        values = split_path(path)
        found = _find(self._root, values, 0, method)
        if found is None:
            return None
        node, _ = found
        route = node.routes.get(method)
        if route is None:
            return WrongMethod(tuple(sorted(node.routes)))
        return Match(route, route.params(values))

    def allowed(self, path: str) -> tuple[str, ...]:
        """The methods some route serves at ``path`` (empty: no such path)."""
        found = _find(self._root, split_path(path), 0, "")
        return () if found is None else tuple(sorted(found[0].routes))


def _find(
    node: _Node, values: tuple[str, ...], index: int, method: str
) -> tuple[_Node, bool] | None:
    """The node for ``values[index:]``: literals first, then the parameter, backtracking.
    Prefers a node that has ``method`` (the bool) over one that has only other methods."""
    if index == len(values):
        if not node.routes:
            return None
        return node, method in node.routes
    value = values[index]
    fallback: tuple[_Node, bool] | None = None
    child = node.literals.get(value)
    if child is not None:
        found = _find(child, values, index + 1, method)
        if found is not None:
            if found[1]:
                return found
            fallback = found
    if node.param is not None and value:
        found = _find(node.param, values, index + 1, method)
        if found is not None and (found[1] or fallback is None):
            return found
    return fallback
