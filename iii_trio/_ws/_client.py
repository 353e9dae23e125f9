"""Open a client WebSocket to a ``ws://`` (or ``wss://``) URL."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Protocol, runtime_checkable

import h11
import trio

from ._connection import WebSocket
from ._frames import MAX_MESSAGE_FRAMES
from ._handshake import (
    MAX_REQUEST_HEAD,
    HandshakeError,
    check_accept,
    client_request,
    new_client_key,
    parse_ws_url,
    refused,
)
from ._socket import MessageSocket

#: Seconds for TCP connect plus the opening handshake.
CONNECT_TIMEOUT: Final = 10.0

Dialer = Callable[[], Awaitable[trio.abc.Stream]]
"""Opens the transport for a connection instead of TCP (e.g. an in-memory stream to an
embedded engine, see :meth:`iii_trio.Engine.connect_in_memory`). A dialer that is also a
:class:`MessageDialer` opens whole message sockets instead (:attr:`iii_trio.Engine.local_dialer`)."""


@runtime_checkable
class MessageDialer(Protocol):
    """A dialer for a server in the same process: opens message sockets, no bytes at all."""

    async def __call__(self) -> trio.abc.Stream: ...

    async def open_websocket(
        self, resource: str, headers: Sequence[tuple[str, str]], *, max_message_size: int
    ) -> MessageSocket:
        """Raises: HandshakeError (the server refused), OSError (it is not running)."""
        ...


async def connect_message_socket(
    url: str,
    *,
    headers: Sequence[tuple[str, str]] = (),
    max_message_size: int,
    connect_timeout: float = CONNECT_TIMEOUT,
    dialer: Dialer | None = None,
) -> MessageSocket:
    """:func:`connect_websocket`, or an in-process socket when ``dialer`` is a
    :class:`MessageDialer` (opened at once: no transport, no handshake to wait for).

    Raises: as :func:`connect_websocket`.
    """
    if isinstance(dialer, MessageDialer):
        resource = parse_ws_url(url).resource
        return await dialer.open_websocket(resource, headers, max_message_size=max_message_size)
    return await connect_websocket(
        url,
        headers=headers,
        max_message_size=max_message_size,
        connect_timeout=connect_timeout,
        dialer=dialer,
    )


async def connect_websocket(
    url: str,
    *,
    headers: Sequence[tuple[str, str]] = (),
    max_message_size: int,
    max_message_frames: int = MAX_MESSAGE_FRAMES,
    connect_timeout: float = CONNECT_TIMEOUT,
    ssl_context: ssl.SSLContext | None = None,
    dialer: Dialer | None = None,
) -> WebSocket:
    """Connect and complete the opening handshake.

    ``max_message_size`` and ``max_message_frames`` bound what the server may send (see
    :class:`WebSocket`).

    Raises:
        ValueError: ``url`` is not a ws:// or wss:// URL.
        OSError: the TCP connection failed.
        HandshakeError: the server answered with an HTTP error (``status``, ``body``), or its
            answer was not a valid upgrade.
        trio.TooSlowError: no upgrade within ``connect_timeout`` seconds.
    """
    target = parse_ws_url(url)
    with trio.move_on_after(connect_timeout):
        stream: trio.abc.Stream
        if dialer is not None:
            stream = await dialer()
        elif target.secure:
            stream = await trio.open_ssl_over_tcp_stream(
                target.host, target.port, ssl_context=ssl_context or ssl.create_default_context()
            )
        else:
            stream = await trio.open_tcp_stream(target.host, target.port)
        try:
            key = new_client_key()
            conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_REQUEST_HEAD)
            await stream.send_all(conn.send(client_request(target, key, list(headers))) or b"")
            leftover = await _read_response(stream, conn, key)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return WebSocket(
            stream,
            is_client=True,
            leftover=leftover,
            max_message_size=max_message_size,
            max_message_frames=max_message_frames,
        )
    where = "the in-memory engine" if dialer is not None else f"{target.host}:{target.port}"
    raise trio.TooSlowError(f"no WebSocket upgrade from {where} within {connect_timeout:g}s")


async def _read_response(stream: trio.abc.Stream, conn: h11.Connection, key: str) -> bytes:
    """Read the server's answer: the bytes after a valid 101, or raise its refusal.

    The answer's head is read without ever reading past :data:`MAX_REQUEST_HEAD` bytes (all
    informational answers before it included); a refusal's body is read to its end (within
    the connect timeout), and its first 4 KiB kept.
    """
    body = bytearray()
    status = 0
    received = 0  # bytes read before the final answer's head was complete
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                if not status:
                    if received >= MAX_REQUEST_HEAD:
                        raise HandshakeError(
                            f"the server's answer head is over {MAX_REQUEST_HEAD} bytes"
                        )
                    data = await stream.receive_some(MAX_REQUEST_HEAD - received)
                    received += len(data)
                else:
                    data = await stream.receive_some(MAX_REQUEST_HEAD)
                conn.receive_data(bytes(data))
            elif isinstance(event, h11.InformationalResponse):
                if event.status_code == 101:
                    check_accept(event, key)
                    return bytes(conn.trailing_data[0])
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                if len(body) < 4096:
                    body += event.data
            else:  # EndOfMessage or ConnectionClosed
                break
    except h11.RemoteProtocolError as exc:
        raise HandshakeError(f"invalid HTTP answer to the upgrade: {exc}") from exc
    except trio.BrokenResourceError as exc:
        raise HandshakeError("connection lost during the handshake") from exc
    raise refused(status, body.decode("utf-8", "replace").strip())
