"""Accept WebSocket connections on trio listeners, routing each upgrade request by path.

Each TCP connection runs in its own task: read the request head (bounded in time and size),
ask the router, then either answer an HTTP error before the upgrade or switch protocols and run
the route's handler. A handler's exception is logged and answered with close 1011; it never
reaches the other connections. :func:`open_memory_websocket` runs the same routing and handlers
for a connection from the same process, with no socket and no bytes (see ``_memory``).

What a request brings is logged through :func:`~._handshake.redact` only: token and channel
key parameters and credentials never reach a log line, whatever the request looks like.
"""

from __future__ import annotations

import errno
import logging
import math
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import attrs
import h11
import trio

from ._connection import WebSocket
from ._frames import INTERNAL_ERROR, MAX_MESSAGE_FRAMES
from ._handshake import (
    MAX_REQUEST_HEAD,
    HandshakeError,
    HandshakeRequest,
    accept_response,
    join_headers,
    make_request,
    new_client_key,
    parse_request,
    redact,
    refused,
    reject_events,
)
from ._memory import MemoryWebSocket, memory_websocket_pair
from ._socket import MessageSocket

logger = logging.getLogger("iii_trio.ws")

#: Seconds a client has to send a complete upgrade request.
HANDSHAKE_TIMEOUT: Final = 10.0
#: Seconds to keep reading (and discarding) what a refused client still sends after our HTTP
#: error answer, before closing: closing a socket with unread bytes makes the kernel send a
#: reset, which can destroy the answer before the client reads it.
REFUSAL_LINGER: Final = 1.0
#: The peer name in logs for connections from the same process.
MEMORY_PEER: Final = "in-process"
#: ``accept()`` errors that mean the process or system is out of descriptors or memory for
#: now (the set trio's ``serve_listeners`` retries on): wait and try again.
ACCEPT_CAPACITY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
#: Seconds between accept attempts while they fail for lack of resources.
ACCEPT_RETRY_DELAY: Final = 0.1
#: At most one warning about failing accepts per this many seconds.
ACCEPT_WARNING_INTERVAL: Final = 10.0


@attrs.frozen
class Accept:
    """Switch protocols and run ``handler`` on the connection.

    The handler is always called once the route accepted, even if sending the 101 answer
    failed (its first receive then raises), so whatever the route claimed is released there.
    """

    handler: Callable[[MessageSocket], Awaitable[None]]
    max_message_size: int
    max_message_frames: int = MAX_MESSAGE_FRAMES


@attrs.frozen
class Reject:
    """Answer with an HTTP error instead of upgrading."""

    status: int
    body: str
    headers: list[tuple[str, str]] = attrs.field(factory=list)


Router = Callable[[HandshakeRequest, str], Accept | Reject]
"""``router(request, peer)`` decides what to do with an upgrade request; ``peer`` is the
client's address as text (for logs)."""


def peer_name(stream: trio.abc.Stream) -> str:
    socket = getattr(stream, "socket", None)
    try:
        host, port, *_ = socket.getpeername()  # type: ignore[union-attr]
    except (AttributeError, OSError, ValueError, TypeError):
        return "?"
    return f"{host}:{port}"


async def _send_events(
    stream: trio.abc.Stream, conn: h11.Connection, events: Sequence[h11.Event]
) -> None:
    data = b"".join(conn.send(event) or b"" for event in events)
    await stream.send_all(data)


async def _read_request(stream: trio.abc.Stream, conn: h11.Connection) -> h11.Request | None:
    """The request head, read without ever reading past :data:`MAX_REQUEST_HEAD` bytes.

    Raises:
        HandshakeError: the head is longer than that (status 431).
        h11.RemoteProtocolError: the head is not valid HTTP/1.1.
    """
    received = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            if received >= MAX_REQUEST_HEAD:
                raise HandshakeError(
                    f"request head over {MAX_REQUEST_HEAD} bytes",
                    status=431,
                    body="request head too large\n",
                )
            data = await stream.receive_some(MAX_REQUEST_HEAD - received)
            received += len(data)
            conn.receive_data(bytes(data))
            continue
        if isinstance(event, h11.Request):
            return event
        return None  # ConnectionClosed before a request


async def handle_connection(
    stream: trio.abc.Stream, router: Router, *, handshake_timeout: float = HANDSHAKE_TIMEOUT
) -> None:
    """Serve one TCP connection: handshake, route, run the handler. Never raises ``Exception``."""
    peer = peer_name(stream)
    try:
        await _serve(stream, router, peer, handshake_timeout)
    except Exception:
        logger.exception("connection from %s failed", peer)
    finally:
        await trio.aclose_forcefully(stream)


@attrs.frozen
class _Refusal:
    """An HTTP error to answer instead of upgrading."""

    status: int
    body: str
    headers: Sequence[tuple[str, str]] = ()
    head: bool = False  # the request was HEAD: answer without a body


async def _serve(
    stream: trio.abc.Stream, router: Router, peer: str, handshake_timeout: float
) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
    try:
        with trio.fail_after(handshake_timeout):
            outcome = await _handshake(stream, conn, router, peer)
    except trio.TooSlowError:
        logger.info("handshake from %s timed out after %ss", peer, handshake_timeout)
        return
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return
    if outcome is None:
        return
    if isinstance(outcome, _Refusal):
        await _refuse(stream, conn, outcome)
        return
    request, decision = outcome
    path = request.path
    ws = WebSocket(
        stream,
        is_client=False,
        leftover=bytes(conn.trailing_data[0]),
        max_message_size=decision.max_message_size,
        max_message_frames=decision.max_message_frames,
    )
    # The HTTP parser, the request and bytes read past it are done with: this frame lives as
    # long as the connection, and an idle connection should hold only what it needs.
    del conn, outcome, request
    await _run_handler(decision, ws, path, peer)


async def _handshake(
    stream: trio.abc.Stream, conn: h11.Connection, router: Router, peer: str
) -> tuple[HandshakeRequest, Accept] | _Refusal | None:
    """Read the request and answer 101 if the router accepts it; otherwise say what to refuse
    (logged here). ``None``: the client left before sending a request."""
    try:
        event = await _read_request(stream, conn)
    except h11.RemoteProtocolError as exc:
        reason = redact(str(exc))
        logger.info("bad HTTP request from %s: %s", peer, reason)
        return _Refusal(exc.error_status_hint, f"bad request: {reason}\n")
    except HandshakeError as exc:
        logger.info("bad HTTP request from %s: %s", peer, exc)
        return _Refusal(exc.status, exc.body)
    if event is None:
        return None
    head = event.method == b"HEAD"
    try:
        request = parse_request(event)
    except HandshakeError as exc:
        logger.info(
            "refused %s %s from %s: HTTP %d, %s",
            event.method.decode("latin-1"),
            redact(event.target.decode("latin-1")),
            peer,
            exc.status,
            exc,
        )
        return _Refusal(exc.status, f"{exc}\n", exc.headers, head)
    decision = router(request, peer)
    if isinstance(decision, Reject):
        # The router logs the refusals worth a line at INFO (401, unknown channel, ...).
        logger.debug(
            "refused upgrade to %s from %s: HTTP %d",
            redact(event.target.decode("latin-1")),
            peer,
            decision.status,
        )
        return _Refusal(decision.status, decision.body, decision.headers)
    try:
        await _send_events(stream, conn, [accept_response(request)])
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the handler's first receive reports the broken connection
    return request, decision


async def _refuse(stream: trio.abc.Stream, conn: h11.Connection, refusal: _Refusal) -> None:
    """Answer ``refusal``, then half-close and read until the client closes too (for at
    most :data:`REFUSAL_LINGER` seconds), so that the answer is not lost to a reset."""
    with trio.move_on_after(REFUSAL_LINGER):
        try:
            events = reject_events(refusal.status, refusal.body, refusal.headers, head=refusal.head)
            await _send_events(stream, conn, events)
            if isinstance(stream, trio.abc.HalfCloseableStream):
                await stream.send_eof()
            while await stream.receive_some(MAX_REQUEST_HEAD):
                pass
        except (h11.LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # could not answer (the client is gone, or h11 refused): just close


async def _run_handler(decision: Accept, ws: MessageSocket, path: str, peer: str) -> None:
    try:
        await decision.handler(ws)
    except Exception:
        logger.exception("handler for %s from %s failed", path, peer)
        with trio.move_on_after(1):
            await ws.close(INTERNAL_ERROR, "internal error")
        raise
    finally:
        await ws.abort() if not ws.closed else None


async def open_memory_websocket(
    router: Router,
    resource: str,
    headers: Sequence[tuple[str, str]],
    *,
    max_message_size: int,
    handler_nursery: trio.Nursery,
) -> MemoryWebSocket:
    """Upgrade an in-process request for ``resource`` (path and query): ask ``router`` as a
    socket's request would be asked, run the accepting route's handler in ``handler_nursery``
    on one half of a :func:`memory_websocket_pair`, and return the other half.

    Raises:
        HandshakeError: the route refused (``status`` and ``body`` as an HTTP answer has).
    """
    # The one schedule point, before anything exists: once the pair is made, nothing may
    # cancel this call and lose the client half while the handler runs on the other.
    await trio.lowlevel.checkpoint()
    request = make_request(resource, join_headers(headers), new_client_key())
    decision = router(request, MEMORY_PEER)
    if isinstance(decision, Reject):
        raise refused(decision.status, decision.body.strip())
    client, server = memory_websocket_pair(
        client_max_message_size=max_message_size,
        server_max_message_size=decision.max_message_size,
    )

    async def run() -> None:
        try:
            await _run_handler(decision, server, request.path, MEMORY_PEER)
        except Exception:
            pass  # logged by _run_handler; it must not reach the other connections

    handler_nursery.start_soon(run)
    return client


async def serve_websockets(
    router: Router,
    listeners: list[trio.SocketListener],
    *,
    handler_nursery: trio.Nursery,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
) -> None:
    """Accept connections on ``listeners`` forever, one handler task each in ``handler_nursery``.

    Each listener is closed when this returns. While ``accept()`` fails for lack of resources
    (out of file descriptors: EMFILE, ENFILE; or memory: ENOMEM, ENOBUFS), new connections
    wait in the listen backlog and accepting is retried every :data:`ACCEPT_RETRY_DELAY`
    seconds, as ``trio.serve_listeners`` does; but instead of an error with a traceback per
    attempt, this logs at most one warning per :data:`ACCEPT_WARNING_INTERVAL` seconds (with
    the count of attempts that failed since the last one) and, after each, one line when
    accepting works again.

    Raises:
        OSError: ``accept()`` failed for another reason.
    """

    async def handler(stream: trio.SocketStream) -> None:
        await handle_connection(stream, router, handshake_timeout=handshake_timeout)

    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(accept_loop, listener, handler_nursery, handler)


async def accept_loop(
    listener: trio.SocketListener,
    handler_nursery: trio.Nursery,
    handler: Callable[[trio.SocketStream], Awaitable[None]],
    slots: trio.Semaphore | None = None,
) -> None:
    """Accept on ``listener`` forever (see :func:`serve_websockets`). With ``slots``, one
    is taken before each accept (more connections wait in the backlog); ``handler`` must
    release it."""
    failed = 0  # accepts failed since the last warning
    warned_at = -math.inf
    # A warning was logged and no accept has worked since. At the descriptor limit, accepts
    # tend to alternate (each connection that closes frees room for one more), so this keeps
    # the log to one warning and one "again" line per interval, however they alternate.
    unresolved = False
    async with listener:
        while True:
            if slots is not None:
                await slots.acquire()
            try:
                stream = await listener.accept()
            except BaseException as exc:
                if slots is not None:
                    slots.release()
                if not isinstance(exc, OSError) or exc.errno not in ACCEPT_CAPACITY_ERRNOS:
                    raise
                failed += 1
                now = trio.current_time()
                if now - warned_at >= ACCEPT_WARNING_INTERVAL:
                    cause = f"{errno.errorcode[exc.errno]} ({os.strerror(exc.errno)})"
                    if warned_at == -math.inf:
                        logger.warning(
                            "cannot accept connections: %s; they wait in the listen backlog, "
                            "retrying every %ss (at most one warning per %ss)",
                            cause,
                            ACCEPT_RETRY_DELAY,
                            ACCEPT_WARNING_INTERVAL,
                        )
                    else:
                        logger.warning(
                            "cannot accept connections: %s; %d accepts failed since the last "
                            "warning",
                            cause,
                            failed,
                        )
                    warned_at = now
                    failed = 0
                    unresolved = True
                await trio.sleep(ACCEPT_RETRY_DELAY)
                continue
            if unresolved:
                logger.info("accepting connections again")
                unresolved = False
            handler_nursery.start_soon(handler, stream)
