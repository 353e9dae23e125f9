"""The HTTP route table and the request/response shapes, h11-style: synchronous, no I/O.
Also the router's hooks for the engine's internal workers (the HTTP server, the caller of
HTTP-invoked functions)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from iii_trio.engine import _http_exchange as ex
from iii_trio.engine._config import EngineConfig
from iii_trio.engine._http_invoker import InvokeError, interpret, parse_target
from iii_trio.engine._http_routes import (
    Match,
    RouteError,
    RouteTable,
    WrongMethod,
    route_from_config,
)
from iii_trio.protocol import InvocationResult, InvokeFunction, RegisterFunction
from tests.engine.test_router import _router


def _route(path: str, method: str = "GET", binding: str | None = None, **config: Any) -> Any:
    config = {"api_path": path, "http_method": method, **config}
    return route_from_config(binding or f"{method} {path}", "fn", config, None)


def test_literals_beat_params_and_matching_backtracks() -> None:
    table = RouteTable()
    table.add(_route("users/:id"))
    table.add(_route("users/me"))
    table.add(_route("a/b"))
    table.add(_route("a/:x/c"))
    found = table.match("GET", "/users/me")
    assert isinstance(found, Match) and found.route.path == "users/me"
    found = table.match("GET", "/users/42")
    assert isinstance(found, Match) and found.path_params == {"id": "42"}
    found = table.match("GET", "/a/b/c")
    assert isinstance(found, Match) and found.path_params == {"x": "b"}
    assert table.match("GET", "/users/") is None  # a trailing slash counts
    assert table.match("GET", "/users/a%20b") == Match(table.get("GET users/:id"), {"id": "a%20b"})  # type: ignore[arg-type]


def test_wrong_method_and_allowed() -> None:
    table = RouteTable()
    table.add(_route("x", "GET"))
    table.add(_route("x", "post"))
    assert table.match("PUT", "x") == WrongMethod(("GET", "POST"))
    assert table.allowed("/x") == ("GET", "POST")
    assert table.match("GET", "y") is None


def test_conflict_is_refused_with_iiis_words_and_same_key_replaces() -> None:
    table = RouteTable()
    table.add(_route("c/:a/:b", binding="one"))
    with pytest.raises(RouteError) as info:
        table.add(_route("c/:b/:a", binding="two"))
    assert str(info.value) == (
        "Route 'GET c/:b/:a' conflicts with already-registered route 'GET c/:a/:b': routes "
        "with identical structure but different path-parameter names are not supported"
    )
    replaced = table.add(_route("/c/:a/:b", binding="three"))
    assert replaced is not None and replaced.binding_id == "one"
    assert table.remove("one") is None  # no longer its route
    assert table.remove("three") is not None
    assert table.match("GET", "c/1/2") is None and len(table) == 0
    table.add(_route("c/:b/:a", binding="four"))  # the shape is free again


def test_bad_configs_are_refused() -> None:
    with pytest.raises(RouteError):
        route_from_config("t", "fn", {"http_method": "GET"}, None)
    with pytest.raises(RouteError):
        _route("x", "BREW")
    with pytest.raises(RouteError):
        _route("x", middleware_function_ids="mw")


def test_response_from_result_follows_iii() -> None:
    whole = ex.response_from_result({"status_code": 201, "body": "text"})
    assert (whole.status, whole.body) == (201, b'"text"')
    assert ("content-type", "application/json") in whole.headers
    typed = ex.response_from_result(
        {"headers": ["Content-Type: text/xml", "bad name: x"], "body": "<x/>"}
    )
    assert (typed.status, typed.headers, typed.body) == (
        200,
        [("Content-Type", "text/xml")],
        b"<x/>",
    )
    assert ex.response_from_result({"status_code": 99}).body == b"{}"
    assert ex.response_from_result("nope").body == b"{}"
    smuggled = ex.header_pairs({"X-A": "1\r\nSet-Cookie: x", "Content-Length": "5", "X-B": "2"})
    assert smuggled == [("X-B", "2")]
    assert ex.header_pairs({"X-Name": "caf\u00e9", "X-Ok": "cafe"}) == [("X-Ok", "cafe")]


def test_middleware_and_control_messages() -> None:
    assert ex.middleware_outcome({"action": "continue"}) is None
    assert ex.middleware_outcome(None) is None
    refused = ex.middleware_outcome({"action": "respond", "response": {"status_code": 403}})
    assert refused is not None and (refused.status, refused.body) == (403, b"null")
    assert ex.control_message('{"type":"set_status","status_code":206}') == ex.SetStatus(206)
    assert ex.control_message('{"type":"set_status","status_code":999}') is None
    assert ex.control_message("not json") is None
    headers = ex.control_message('{"type":"set_headers","headers":{"a":"1"}}')
    assert headers == ex.SetHeaders([("a", "1")])
    assert ex.merge_headers([("A", "0"), ("b", "2")], [("a", "1")]) == [("b", "2"), ("a", "1")]
    error = json.loads(ex.error_response(500, "x", "y").body)["error"]
    assert error["code"] == "x" and int(error["error_id"], 16) >= 0


def test_request_shapes() -> None:
    assert ex.query_params("a=1&a=2&b=%20") == {"a": "2", "b": " "}
    assert ex.request_headers([(b"X-A", b"1"), (b"x-b", b"\xff")]) == {"x-a": "1", "x-b": ""}
    assert ex.is_json({"content-type": "application/json; charset=utf-8"})
    assert not ex.is_json({"content-type": "APPLICATION/JSON"})  # case-sensitive, as iii
    assert ex.parse_json_body(b"") is None and ex.parse_json_body(b"{") is None


def test_internal_caller_gets_no_caller_key_and_http_functions_go_to_their_executor() -> None:
    router, _, _ = _router()
    router.connect_internal("engine:http", "iii-http")
    router.connect_internal("engine:http-functions", "iii-http-functions")
    refused: list[Any] = []

    def check(invocation: Any) -> str | None:
        refused.append(invocation)
        return None if invocation.get("url", "").startswith("https://") else "https only"

    router.serve_http_functions("engine:http-functions", check)
    record, _ = router.connect("peer")
    router.receive(record.worker_id, RegisterFunction(id="w::fn"))
    router.receive(
        record.worker_id, RegisterFunction(id="ext::ok", invocation={"url": "https://h/x"})
    )
    router.receive(
        record.worker_id, RegisterFunction(id="ext::bad", invocation={"url": "http://h/x"})
    )
    assert router.functions.lookup("default", "ext::bad") is None
    out = router.receive(
        "engine:http", InvokeFunction(function_id="w::fn", invocation_id="a", data={})
    )
    assert out[0][0] == record.worker_id
    assert isinstance(out[0][1], InvokeFunction) and out[0][1].data == {}
    out = router.receive(record.worker_id, InvokeFunction(function_id="ext::ok", invocation_id="b"))
    assert out[0][0] == "engine:http-functions"
    forward = out[0][1]
    assert isinstance(forward, InvokeFunction) and forward.namespace == "default"
    answer = InvocationResult(
        invocation_id=forward.invocation_id or "", function_id="ext::ok", result=1
    )
    assert router.receive("engine:http-functions", answer)[0][0] == record.worker_id


def test_invocation_urls_are_checked() -> None:
    strict = EngineConfig()
    loose = EngineConfig(http_functions_allow_http=True, http_functions_allow_private=True)
    for url in (
        "http://example.com/x",
        "https://127.0.0.1/x",
        "https://localhost/x",
        "https://10.1.2.3/",
    ):
        with pytest.raises(InvokeError):
            parse_target({"url": url}, strict)
    assert parse_target({"url": "https://example.com/x?y=1"}, strict).resource == "/x?y=1"
    target = parse_target({"url": "http://127.0.0.1:9/x", "method": "put", "timeout_ms": 50}, loose)
    assert (target.method, target.port, target.timeout) == ("PUT", 9, 0.05)
    with pytest.raises(InvokeError):
        parse_target(
            {"url": "https://e.com", "auth": {"type": "bearer", "token_key": "NO_SUCH_ENV_VAR_X"}},
            strict,
        )


def test_invocation_answers() -> None:
    assert interpret(200, b"OK", b'{"a":1}') == {"a": 1}
    assert interpret(204, b"", b"") is None
    assert interpret(302, b"", b"<html>") is None
    with pytest.raises(InvokeError) as info:
        interpret(200, b"OK", b"not json")
    assert info.value.code == "invalid_response"
    with pytest.raises(InvokeError) as info:
        interpret(500, b"", b"")
    assert (info.value.code, str(info.value)) == ("http_error", "HTTP 500 Internal Server Error")
    with pytest.raises(InvokeError) as info:
        interpret(400, b"", b'{"error":{"code":"bad","message":"no"}}')
    assert (info.value.code, str(info.value)) == ("bad", "no")
