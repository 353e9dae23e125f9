"""HTTP handlers, trio style: a request whose body is a ``ReceiveStream`` and a response
that is a ``SendStream`` with a status and headers.

An engine with an HTTP server (``iii-trio engine``, or ``open_engine(http_port=...)``)
serves the routes bound with the ``http`` trigger type. It calls the bound function with the
request (``method``, ``path_params``, ``query_params``, ``headers``, ``body`` when the request
is JSON) and two channels: ``request_body`` (the body, streamed) and ``response`` (what the
handler writes: ``set_status``/``set_headers`` text messages, then the body). :func:`http_handler`
turns those into an :class:`HttpRequest` and an :class:`HttpResponse`;
:meth:`HttpAPI.register_http_route` also binds the route.

A handler may instead return iii's ``{"status_code", "headers", "body"}`` without touching the
response stream: the engine sends that whole.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, final

import attrs
import trio

from ._channels import ChannelReader, ChannelWriter

if TYPE_CHECKING:
    from ._triggers import TriggerRef


def sse_event(data: str, *, event: str | None = None, id: str | None = None) -> bytes:
    """One Server-Sent Event, encoded (each line of ``data`` is a ``data:`` field)."""
    lines = []
    if id is not None:
        lines.append(f"id: {id}")
    if event is not None:
        lines.append(f"event: {event}")
    lines.extend(f"data: {line}" for line in data.split("\n"))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


@final
@attrs.frozen(kw_only=True)
class HttpRequest:
    """One HTTP request, as the engine hands it to a handler.

    Attributes:
        method: the request's method, upper case.
        path: the route's pattern (``"users/:id"``), as iii reports it.
        path_params: the values of the pattern's ``:name`` segments (not percent-decoded).
        query_params: the query parameters, decoded (the last of a repeated one wins).
        headers: the request headers, names lower case.
        json: the parsed body when the request's content type is JSON (``None`` otherwise,
            or when it did not parse).
        body: the body as a stream (for a JSON request, the same bytes as ``json``). A
            client that goes away mid-body makes it raise ``ChannelLost``, never end cleanly.
    """

    method: str
    path: str
    path_params: dict[str, str]
    query_params: dict[str, str]
    headers: dict[str, str]
    json: Any
    body: ChannelReader

    async def read_all(self, max_bytes: int | None = None) -> bytes:
        """The whole body.

        Raises:
            ValueError: it is longer than ``max_bytes``.
            ChannelLost, ChannelAborted: the body did not arrive whole.
        """
        data = bytearray()
        async for chunk in self.body:
            data += chunk
            if max_bytes is not None and len(data) > max_bytes:
                raise ValueError(f"request body over {max_bytes} bytes")
        return bytes(data)


@final
class HttpResponse(trio.abc.SendStream):
    """The response of an HTTP handler, as a ``SendStream``: set the status and headers,
    then send the body. The head goes out with the first bytes sent (or when the handler
    returns); status and headers are final from then on.

    The body is sent chunk by chunk as written (chunked encoding), so Server-Sent Events
    need only :meth:`send_event`. If the handler fails after the head went out, the client's
    connection is cut: it never takes a partial body for a whole one.
    """

    def __init__(self, writer: ChannelWriter) -> None:
        self._writer = writer
        self._started = False
        self._used = False
        self.status = 200
        self.headers: dict[str, str] = {}

    @property
    def writer(self) -> ChannelWriter:
        """The ``response`` channel's writer itself."""
        return self._writer

    @property
    def used(self) -> bool:
        """Whether the handler set the status or headers or sent body bytes."""
        return self._used or self._started

    @property
    def started(self) -> bool:
        """Whether body bytes were sent (the head is then out)."""
        return self._started

    def _check_head(self) -> None:
        if self._started:
            raise RuntimeError("the response head was sent with the first body bytes")

    async def set_status(self, status: int) -> None:
        """Set the status code (100-599).

        Raises:
            ValueError: not a status code.
            RuntimeError: body bytes were sent already.
        """
        if not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError(f"not an HTTP status: {status!r}")
        self._check_head()
        self._used = True
        self.status = status
        await self._writer.send_message(json.dumps({"type": "set_status", "status_code": status}))

    async def set_headers(self, headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> None:
        """Add or replace response headers (names compare without case).

        Raises:
            RuntimeError: body bytes were sent already.
        """
        self._check_head()
        self._used = True
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        update = {str(name): str(value) for name, value in pairs}
        self.headers.update(update)
        await self._writer.send_message(json.dumps({"type": "set_headers", "headers": update}))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send body bytes (the head goes out with the first).

        Raises:
            ChannelReaderClosed, ChannelLost: the client went away.
        """
        if data:
            self._started = True
        await self._writer.send_all(data)

    async def send_event(
        self, data: str, *, event: str | None = None, id: str | None = None
    ) -> None:
        """Send one Server-Sent Event (set ``content-type: text/event-stream`` first)."""
        await self.send_all(sse_event(data, event=event, id=id))

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until the client is ready for more (see ``trio.abc.SendStream``)."""
        await self._writer.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        """End the body cleanly (also done when the handler returns)."""
        await self._writer.aclose()


#: A trio HTTP handler: ``await handler(request, response)``; it may return iii's
#: ``{"status_code", "headers", "body"}`` instead of writing to ``response``.
HttpHandler = Callable[[HttpRequest, HttpResponse], Awaitable[Any]]


def http_handler(handler: HttpHandler) -> Callable[[Any], Awaitable[Any]]:
    """Make ``handler(request, response)`` a function handler for ``http`` triggers (it
    gets the engine's payload and builds the :class:`HttpRequest` and :class:`HttpResponse`).

    Raises (from the wrapped handler):
        TypeError: the payload is not an HTTP request from the engine.
    """

    async def function(payload: Any) -> Any:
        if not isinstance(payload, dict):
            raise TypeError("not an HTTP request payload")
        body, writer = payload.get("request_body"), payload.get("response")
        if not isinstance(body, ChannelReader) or not isinstance(writer, ChannelWriter):
            raise TypeError("not an HTTP request payload (no request_body/response channels)")
        request = HttpRequest(
            method=str(payload.get("method", "GET")),
            path=str(payload.get("path", "")),
            path_params=dict(payload.get("path_params") or {}),
            query_params=dict(payload.get("query_params") or {}),
            headers=dict(payload.get("headers") or {}),
            json=payload.get("body"),
            body=body,
        )
        # The engine drops a request's channel ends that nobody attached once the response
        # is decided: an unread body, or a response answered by the returned result, need
        # no socket just to be closed.
        body._attach_on_close = False
        response = HttpResponse(writer)
        result = await handler(request, response)
        if result is not None and not response.used:
            writer._attach_on_close = False
        return result

    function.__name__ = getattr(handler, "__name__", "http_handler")
    function.__doc__ = handler.__doc__
    return function


class HttpAPI:
    """HTTP routes for a worker (a base class of ``Worker``)."""

    if TYPE_CHECKING:

        def register_function(self, function_id: str, handler: Any) -> object: ...

        def register_trigger(
            self, trigger_type: str, function_id: str | None = None, config: Any = None
        ) -> TriggerRef: ...

    def register_http_route(
        self,
        function_id: str,
        handler: HttpHandler,
        *,
        api_path: str,
        http_method: str = "GET",
        middleware_function_ids: Iterable[str] = (),
    ) -> TriggerRef:
        """Serve ``http_method api_path`` on the engine's HTTP server with
        ``handler(request, response)`` (see :func:`http_handler`): registers ``function_id``
        and binds it with the ``http`` trigger type. ``api_path`` segments ``:name`` are path
        parameters. Returns the binding (unregister it to stop serving the route).

        Raises:
            ValueError: an empty function id or path.
        """
        if not api_path:
            raise ValueError("api_path must not be empty")
        self.register_function(function_id, http_handler(handler))
        config: dict[str, Any] = {"api_path": api_path, "http_method": http_method.upper()}
        middleware = list(middleware_function_ids)
        if middleware:
            config["middleware_function_ids"] = middleware
        return self.register_trigger("http", function_id, config)
