"""The answer to a routed HTTP request: the function's result raced against its ``response``
channel (see :mod:`._http_server` for the theory of operation)."""

from __future__ import annotations

from typing import Protocol, final

import trio

from .. import _codes as codes
from .._ws import ConnectionClosed, MessageSocket
from . import _http_exchange as ex
from ._config import EngineConfig
from ._http_exchange import Headers, Response
from ._http_service import CallFailed, PendingCall


class _Gateway(Protocol):
    def writer_attached(self, channel_id: str) -> bool: ...


class AnswerSink(Protocol):
    """What an answer needs of its HTTP connection."""

    too_large: bool
    config: EngineConfig

    @property
    def gateway(self) -> _Gateway: ...

    async def send_whole(self, response: Response, *, close: bool = False) -> None: ...

    async def send_head(self, status: int, headers: Headers) -> None: ...

    async def send_chunk(self, data: bytes) -> None: ...

    async def send_end(self) -> None: ...

    def abort(self, why: str) -> Exception: ...


@final
class Answer:
    """Decide the response from the function's result and the ``response`` channel, then
    stream the body (see the module docstring).

    One refinement of iii's rule (channel items win ties): a ``response`` channel that ends
    cleanly having carried nothing at all (no text frame, no data) leaves the decision to the
    result. Our SDK closes every channel end a handler was given when it returns, so a
    handler that returns ``{status_code, body}`` also closes ``response``, empty."""

    def __init__(
        self, conn: AnswerSink, ws: MessageSocket, channel_id: str, timeout: float
    ) -> None:
        self.conn = conn
        self.channel_id = channel_id
        self.ws = ws
        self.timeout = timeout
        self.status = 200
        self.headers: Headers = []
        #: A text frame shaped the head (the handler streams).
        self.touched = False
        self.first: bytes | None = None
        self.end: ConnectionClosed | None = None
        self.decided: Response | None = None

    async def run(self, pending: PendingCall) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_channel, pending, nursery.cancel_scope)
            nursery.start_soon(self._watch_result, pending, nursery.cancel_scope)
        conn = self.conn
        if conn.too_large:
            self.decided = too_large_response(conn.config.http_max_body_size)
        end = self.end
        if self.decided is None and self._empty_end() and pending.done.is_set():
            self.decided = self._from_result(pending)
        if self.decided is not None:
            await conn.send_whole(self.decided)
            return
        if end is not None and end.code != codes.CLEAN_EOF:
            # The handler failed before the head: a whole error answer is still possible.
            await conn.send_whole(
                ex.error_response(500, codes.INVOCATION_FAILED, end.reason or "stream aborted")
            )
            return
        await conn.send_head(self.status, self.headers)
        if self.first is not None:
            await conn.send_chunk(self.first)
            self.first = None
            await self._stream_rest()
        await conn.send_end()

    async def _stream_rest(self) -> None:
        ws, conn = self.ws, self.conn
        while True:
            try:
                item = await ws.receive()
            except ConnectionClosed as exc:
                if exc.code == codes.CLEAN_EOF:
                    return
                raise conn.abort(
                    f"the handler's stream ended with {exc.code} {exc.reason}"
                ) from None
            if isinstance(item, bytes):
                await conn.send_chunk(item)

    def _empty_end(self) -> bool:
        end = self.end
        return (
            end is not None
            and end.code == codes.CLEAN_EOF
            and not self.touched
            and self.first is None
        )

    async def _watch_channel(self, pending: PendingCall, done: trio.CancelScope) -> None:
        try:
            while True:
                item = await self.ws.receive()
                if isinstance(item, str):
                    control = ex.control_message(item)
                    self.touched = True
                    if isinstance(control, ex.SetStatus):
                        self.status = control.status
                    elif isinstance(control, ex.SetHeaders):
                        self.headers = ex.merge_headers(self.headers, control.headers)
                elif item:
                    self.first = item
                    break
        except ConnectionClosed as exc:
            self.end = exc
            if self._empty_end() and not pending.done.is_set():
                return  # closed unused: the result decides (see the class docstring)
        done.cancel()

    async def _watch_result(self, pending: PendingCall, done: trio.CancelScope) -> None:
        await pending.done.wait()
        self.decided = self._from_result(pending)
        if self.decided is not None or self.end is not None:
            done.cancel()  # decided, or the channel ended unused: an empty answer
            return
        # A null result (or one the stream overrides): the channel decides. A handler that
        # never opens it gets the request timeout, as in iii.
        await trio.sleep(self.timeout)
        if not self._handler_streams():
            self.decided = ex.empty_response(504)
            done.cancel()

    def _from_result(self, pending: PendingCall) -> Response | None:
        """The whole answer the function's result gives; ``None``: the channel decides."""
        try:
            result = pending.result()
        except CallFailed as exc:
            return failure_response(exc)
        if result is not None and not self._handler_streams():
            return ex.response_from_result(result)
        return None

    def _handler_streams(self) -> bool:
        """Whether the handler is answering through ``response`` (its result is then
        ignored)."""
        if self.first is not None or self.touched:
            return True
        return self.end is None and self.conn.gateway.writer_attached(self.channel_id)


def failure_response(exc: CallFailed) -> Response:
    """The whole answer for a call that failed (504 for a timeout, else a 500 envelope)."""
    if exc.code == codes.INVOCATION_TIMEOUT:
        return ex.empty_response(504)
    return ex.error_response(500, exc.code, exc.message)


def too_large_response(limit: int) -> Response:
    """413 for a request body over ``limit`` bytes."""
    return ex.error_response(413, "PAYLOAD_TOO_LARGE", f"request body over the {limit} byte limit")
