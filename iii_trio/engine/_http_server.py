"""The engine's HTTP server: HTTP/1.1 over h11, one task per connection, requests served
through channels.

Theory of operation
-------------------
Each connection runs :func:`handle_http_connection`: read a request head (the first byte
within ``http_idle_timeout``, the whole head within ``http_head_timeout`` of it, at most 16 KiB),
answer it, and go on with the next one while both sides keep the connection (pipelined
requests are answered in order, one at a time). Anything h11 refuses is answered 400 (or 431)
and the connection closed.

A routed request (see :mod:`._http_exchange` for the shapes) runs in its own nursery, which
owns the engine side of its two channels: the server attaches in-process to the *write* end of
``request_body`` and the *read* end of ``response`` (real broker channels, so their byte
bounds, end codes and the deadline rule apply as between workers). A JSON body is read whole
(it is parsed for ``body``) and written to ``request_body`` in 64 KiB frames; any other body
is pumped from the socket to the channel as it arrives, so a slow handler slows the client
down through TCP and the engine holds at most the channel's bounds. A client that goes away
mid-body makes the channel *lost* (the handler's reader raises ``ChannelLost``), never a
clean end; a body over ``http_max_body_size`` aborts it and is answered 413.

The answer races the function's result against the ``response`` channel (:mod:`._http_answer`):
``set_status``/``set_headers`` text frames shape the head, the first data frame (or the end
of the channel) sends it, and the body follows chunk by chunk, each written as it comes (SSE
needs nothing more). A returned ``{status_code, headers, body}`` is sent whole if the handler
never opened ``response``. A channel that ends with an error after the head aborts the
response: the connection is closed without the last chunk, so no client takes a cut body for a
whole one.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Final, final

import attrs
import h11
import trio

from .. import _codes as codes
from .._log_budget import WarningBudget
from .._ws import ConnectionClosed, MessageSocket
from .._ws._handshake import MAX_REQUEST_HEAD, redact
from .._ws._server import REFUSAL_LINGER, accept_loop, peer_name
from ..protocol import JSON
from . import _http_exchange as ex
from ._builtins import ChannelLimitExceeded
from ._config import EngineConfig
from ._http_answer import Answer, failure_response, too_large_response
from ._http_exchange import Headers, Response
from ._http_routes import Match, Route, WrongMethod
from ._http_service import CallFailed, HttpTriggers

logger = logging.getLogger("iii_trio.engine.http")

#: Bytes read from a client at once, and the largest frame written to ``request_body``.
CHUNK: Final = 64 * 1024

#: Opens an in-process end of a channel from its ref, its broker handler in the nursery.
OpenEnd = Callable[[dict[str, JSON], trio.Nursery], Awaitable[MessageSocket]]


class _Abort(Exception):
    """The response cannot be completed: close the connection without ending it."""


@final
@attrs.define(eq=False)
class HttpGateway:
    """What the HTTP server needs of its engine.

    Attributes:
        config: the engine's settings.
        triggers: the route table and the calls (the ``http`` internal worker).
        create_channel: makes a channel owned by the HTTP server (``{"writer", "reader"}``).
        release_channel: expires a channel's ends that never attached.
        writer_attached: whether a channel's write end ever attached.
        open_end: attaches the server in-process to one end of a channel.
        requests: limits the requests served at once.
        channel_refusals: the WARNING lines for requests refused at ``max_channels``
            (rationed: a full channel table refuses every request).
    """

    config: EngineConfig
    triggers: HttpTriggers
    create_channel: Callable[[], dict[str, JSON]]
    release_channel: Callable[[str], None]
    writer_attached: Callable[[str], bool]
    open_end: OpenEnd
    requests: trio.Semaphore
    channel_refusals: WarningBudget = attrs.field(factory=lambda: WarningBudget(logger))


async def handle_http_connection(stream: trio.SocketStream, gateway: HttpGateway) -> None:
    """Serve one HTTP connection until either side ends it. Never raises ``Exception``."""
    peer = peer_name(stream)
    conn = _Conn(stream, gateway, peer)
    try:
        await conn.serve()
    except Exception:
        logger.exception("HTTP connection from %s failed", peer)
    finally:
        if conn.reset:
            _set_reset(stream)
        await trio.aclose_forcefully(stream)


def _set_reset(stream: trio.SocketStream) -> None:
    """Make the close a TCP reset (SO_LINGER 0): the one way to tell an HTTP/1.0 client,
    whose body ends with the connection, that the body it got is not whole."""
    try:
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass


@final
class _Conn:
    def __init__(self, stream: trio.SocketStream, gateway: HttpGateway, peer: str) -> None:
        self.stream = stream
        self.gateway = gateway
        self.config = gateway.config
        self.peer = peer
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
        self.reset = False
        self.head_only = False
        self.origin = False
        #: The request body went over ``http_max_body_size`` (answered 413).
        self.too_large = False

    # --- the request loop ------------------------------------------------------------------

    async def serve(self) -> None:
        conn = self.h11
        while True:
            try:
                request = await self._read_head()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            except h11.RemoteProtocolError as exc:
                if conn.their_state is not h11.IDLE or conn.trailing_data[0]:
                    logger.info("bad HTTP request from %s: %s", self.peer, redact(str(exc)))
                    await self._refuse(exc.error_status_hint, f"bad request: {redact(str(exc))}")
                return
            if request is None:
                return
            try:
                await self._answer(request)
            except (_Abort, trio.BrokenResourceError, trio.ClosedResourceError):
                return
            except h11.RemoteProtocolError as exc:
                logger.info("bad HTTP request body from %s: %s", self.peer, redact(str(exc)))
                return
            except h11.LocalProtocolError as exc:
                logger.info("HTTP answer to %s failed: %s", self.peer, exc)
                return
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return  # the body was not read to its end (or it is an HTTP/1.0 client)
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _read_head(self) -> h11.Request | None:
        """The next request head, or ``None`` when the client left (or took too long).

        Raises:
            h11.RemoteProtocolError: not HTTP/1.1 (including a head over 16 KiB).
        """
        conn = self.h11
        deadline = trio.current_time() + self.config.http_idle_timeout
        started = bool(conn.trailing_data[0])
        if started:
            deadline = trio.current_time() + self.config.http_head_timeout
        received = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                if received >= MAX_REQUEST_HEAD:
                    raise h11.RemoteProtocolError(
                        f"request head over {MAX_REQUEST_HEAD} bytes", error_status_hint=431
                    )
                with trio.move_on_at(deadline):
                    data = await self.stream.receive_some(MAX_REQUEST_HEAD - received)
                    received += len(data)
                    conn.receive_data(data)
                    if not started and data:
                        started = True
                        deadline = trio.current_time() + self.config.http_head_timeout
                    continue
                if started:
                    logger.info("request head from %s timed out", self.peer)
                    await self._refuse(408, "request head timed out")
                return None
            if isinstance(event, h11.Request):
                return event
            return None  # ConnectionClosed (or PAUSED after a close)

    async def _refuse(self, status: int, text: str) -> None:
        """Answer an error and close (reading what the client still sends, briefly, so the
        answer is not lost to a reset)."""
        with trio.move_on_after(REFUSAL_LINGER):
            try:
                if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    code = "REQUEST_TIMEOUT" if status == 408 else "BAD_REQUEST"
                    await self.send_whole(ex.error_response(status, code, text), close=True)
                await self.stream.send_eof()
                while await self.stream.receive_some(CHUNK):
                    pass
            except (h11.LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    # --- one request -----------------------------------------------------------------------

    async def _answer(self, request: h11.Request) -> None:
        method = request.method.decode("ascii", "replace").upper()
        target = request.target.decode("latin-1")
        path, _, query = target.partition("?")
        headers = ex.request_headers(request.headers)
        self.head_only = method == "HEAD"
        self.origin = self.config.http_cors and "origin" in headers
        routes = self.gateway.triggers.routes
        if method == "OPTIONS" and self.config.http_cors and ex.is_preflight(headers):
            await self.send_whole(ex.preflight_response(headers))
            return
        found = routes.match(method, path)
        if isinstance(found, WrongMethod) and method == "HEAD":
            found = routes.match("GET", path)  # HEAD is GET without the body
        if found is None:
            await self._finish_unrouted(ex.not_found())
            return
        if isinstance(found, WrongMethod):
            status = 204 if method == "OPTIONS" else 405
            await self._finish_unrouted(
                ex.empty_response(status, [("allow", ", ".join(found.allowed))])
            )
            return
        length = _content_length(request)
        if length is not None and length > self.config.http_max_body_size:
            await self._finish_unrouted(too_large_response(self.config.http_max_body_size))
            return
        async with self.gateway.requests:
            refusal = await self._route(found, method, ex.query_params(query), headers)
        if refusal is not None:  # answered, and its body drained, without holding a slot
            await self._finish_unrouted(refusal)

    async def _finish_unrouted(self, response: Response) -> None:
        """Answer a request no function handles; its body (if any) is read and dropped, up
        to the body limit, so the connection can serve the next request."""
        await self.send_whole(response)
        left = self.config.http_max_body_size
        while self.h11.their_state is h11.SEND_BODY and left > 0:
            with trio.move_on_after(self.config.http_head_timeout) as scope:
                event = await self._next_body_event()
            if scope.cancelled_caught or not isinstance(event, h11.Data):
                return
            left -= len(event.data)

    async def _route(
        self, found: Match, method: str, query: dict[str, str], headers: dict[str, str]
    ) -> Response | None:
        """Serve a routed request through its middleware and function; returns the answer
        when the request ends before the function runs (a middleware's answer or failure, no
        channels left), for the caller to send once it has let go of its request slot."""
        route = found.route
        triggers = self.gateway.triggers
        timeout = self.config.http_request_timeout
        info = ex.middleware_input(method, found.path_params, query, headers)
        for function_id in route.middleware:
            try:
                outcome = await triggers.run_call(function_id, info, timeout=timeout)
            except CallFailed as exc:
                if exc.code == codes.INVOCATION_TIMEOUT:
                    return ex.error_response(504, "MIDDLEWARE_TIMEOUT", f"{function_id} timed out")
                return failure_response(exc)
            respond = ex.middleware_outcome(outcome)
            if respond is not None:
                return respond
        gateway = self.gateway
        try:
            request_refs = gateway.create_channel()
            try:
                response_refs = gateway.create_channel()
            except ChannelLimitExceeded:
                gateway.release_channel(ex.channel_id_of(request_refs))
                raise
        except ChannelLimitExceeded as exc:
            # The engine holds as many channels as it may: this request waits for none of
            # them to end (that can take channel_ttl), the client is told to come back.
            gateway.channel_refusals.warning("HTTP request refused with 503: %s", exc)
            return ex.error_response(
                503, "CHANNEL_LIMIT", f"the engine is busy: {exc}", [("Retry-After", "1")]
            )
        channel_ids = [ex.channel_id_of(request_refs), ex.channel_id_of(response_refs)]
        data = ex.invocation_data(
            route,
            method=method,
            path_params=found.path_params,
            query=query,
            headers=headers,
            body=None,
            request_body=ex.end_ref(request_refs, "reader"),
            response=ex.end_ref(response_refs, "writer"),
        )
        try:
            async with trio.open_nursery() as nursery:
                body_ws = await gateway.open_end(ex.end_ref(request_refs, "writer"), nursery)
                response_ws = await gateway.open_end(ex.end_ref(response_refs, "reader"), nursery)
                try:
                    await self._exchange(
                        route, data, ex.is_json(headers), body_ws, response_ws, channel_ids
                    )
                finally:
                    with trio.CancelScope(shield=True):
                        await body_ws.abort()
                        await response_ws.abort()
                    nursery.cancel_scope.cancel()
        finally:
            self._release(channel_ids)
        return None

    def _release(self, channel_ids: list[str]) -> None:
        for channel_id in channel_ids:
            self.gateway.release_channel(channel_id)

    async def _exchange(
        self,
        route: Route,
        data: dict[str, JSON],
        whole: bool,
        body_ws: MessageSocket,
        response_ws: MessageSocket,
        channel_ids: list[str],
    ) -> None:
        """``data``: the function's payload; ``whole``: the body is JSON, read whole and
        parsed into ``data["body"]`` first."""
        if whole:
            raw = await self._read_whole_body(body_ws)
            if raw is None:
                return
            data["body"] = ex.parse_json_body(raw)
            await _send_chunked(body_ws, raw)
            await body_ws.close()
        timeout = self.config.http_request_timeout
        if route.condition is not None:
            try:
                allowed = await self.gateway.triggers.run_call(
                    route.condition, ex.condition_data(data), timeout=timeout
                )
            except CallFailed as exc:
                await self.send_whole(failure_response(exc))
                return
            if allowed is False:
                await self.send_whole(ex.condition_not_met())
                return
        async with trio.open_nursery() as nursery:
            if not whole:
                nursery.start_soon(self._pump_body, body_ws)
            answer = Answer(self, response_ws, channel_ids[1], timeout)
            pending = self.gateway.triggers.call(
                route.function_id, data, timeout=timeout, metadata=route.metadata
            )
            try:
                await answer.run(pending)
            finally:
                self.gateway.triggers.forget(pending)
                self._release(channel_ids)
            if self.h11.their_state is not h11.SEND_BODY:
                return  # the body pump is done (or was never needed)
            # The answer is out before the whole body came in: the connection cannot serve
            # another request, and the handler is done with the stream.
            nursery.cancel_scope.cancel()

    # --- request bodies --------------------------------------------------------------------

    async def _next_body_event(self) -> h11.Event:
        conn = self.h11
        if conn.they_are_waiting_for_100_continue:
            await self.stream.send_all(
                conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b""
            )
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await self.stream.receive_some(CHUNK))
            elif event is h11.PAUSED:
                raise h11.RemoteProtocolError("unexpected pause in a request body")
            else:
                assert isinstance(event, h11.Event)
                return event

    async def _body_chunk(self) -> bytes | None:
        """The next piece of the request body; ``None`` at its end.

        Raises:
            h11.RemoteProtocolError: the connection ended mid-body (or the body is malformed).
        """
        event = await self._next_body_event()
        if isinstance(event, h11.Data):
            return event.data
        if isinstance(event, h11.EndOfMessage):
            return None
        raise h11.RemoteProtocolError("connection closed in the request body")

    async def _read_whole_body(self, body_ws: MessageSocket) -> bytes | None:
        """A JSON body, whole (``None``: it was too large, or the client left; answered)."""
        raw = bytearray()
        limit = self.config.http_max_body_size
        try:
            while (chunk := await self._body_chunk()) is not None:
                raw += chunk
                if len(raw) > limit:
                    await body_ws.close(codes.WRITER_ABORTED, "request body too large")
                    await self.send_whole(too_large_response(limit), close=True)
                    return None
            return bytes(raw)
        except (h11.RemoteProtocolError, trio.BrokenResourceError) as exc:
            logger.info("client %s left during its request body: %s", self.peer, exc)
            raise _Abort from exc

    async def _pump_body(self, body_ws: MessageSocket) -> None:
        """Move the request body to ``request_body`` as it arrives, with backpressure: the
        next read waits for the channel to take the last chunk."""
        limit = self.config.http_max_body_size
        received = 0
        try:
            while (chunk := await self._body_chunk()) is not None:
                received += len(chunk)
                if received > limit:
                    logger.info("request body from %s over %d bytes", self.peer, limit)
                    await body_ws.close(codes.WRITER_ABORTED, "request body too large")
                    self.too_large = True
                    return
                await _send_chunked(body_ws, chunk)
            await body_ws.close()
        except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            # The client went away mid-body: the handler's reader must not see a clean end.
            logger.info("client %s left during its request body", self.peer)
            await body_ws.abort()
        except ConnectionClosed:
            pass  # the handler closed request_body (or it was released): stop reading

    # --- responses -------------------------------------------------------------------------

    def _cors(self, headers: Headers) -> Headers:
        if not self.origin:
            return headers
        return [
            *headers,
            ("access-control-allow-origin", "*"),
            ("access-control-expose-headers", "*"),
        ]

    async def send_whole(self, response: Response, *, close: bool = False) -> None:
        headers = [
            *self._cors(response.headers),
            ("content-length", str(len(response.body))),
        ]
        if close:
            headers.append(("connection", "close"))
        conn = self.h11
        data = conn.send(
            h11.Response(
                status_code=response.status,
                headers=headers,
                reason=ex.reason_phrase(response.status),
            )
        )
        if response.body and not self.head_only:
            data += conn.send(h11.Data(data=response.body))
        data += conn.send(h11.EndOfMessage())
        await self.stream.send_all(data)

    async def send_head(self, status: int, headers: Headers) -> None:
        head = h11.Response(
            status_code=status, headers=self._cors(headers), reason=ex.reason_phrase(status)
        )
        await self.stream.send_all(self.h11.send(head) or b"")

    async def send_chunk(self, data: bytes) -> None:
        if data and not self.head_only:
            await self.stream.send_all(self.h11.send(h11.Data(data=data)) or b"")

    async def send_end(self) -> None:
        await self.stream.send_all(self.h11.send(h11.EndOfMessage()) or b"")

    def abort(self, why: str) -> _Abort:
        """The response cannot end well: the connection is cut (a reset), so the client
        never takes what it got for a whole body."""
        logger.info("response to %s aborted: %s", self.peer, why)
        self.reset = True
        return _Abort(why)


def _content_length(request: h11.Request) -> int | None:
    for name, value in request.headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_chunked(ws: MessageSocket, data: bytes) -> None:
    """``data`` as frames of at most :data:`CHUNK` bytes."""
    for start in range(0, len(data), CHUNK):
        await ws.send(data[start : start + CHUNK])


async def serve_http(
    gateway: HttpGateway, listeners: list[trio.SocketListener], *, handler_nursery: trio.Nursery
) -> None:
    """Accept HTTP connections on ``listeners`` until cancelled, one task each in
    ``handler_nursery``, at most ``http_max_connections`` at once (more wait in the listen
    backlog). ``accept()`` failures for lack of descriptors or memory are retried as the
    WebSocket listener's are (:func:`~.._ws._server.accept_loop`).

    Raises:
        OSError: ``accept()`` failed for another reason.
    """
    slots = trio.Semaphore(gateway.config.http_max_connections)

    async def serve_one(stream: trio.SocketStream) -> None:
        try:
            await handle_http_connection(stream, gateway)
        finally:
            slots.release()

    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(accept_loop, listener, handler_nursery, serve_one, slots)
