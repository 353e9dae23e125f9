"""One worker's control connection, on the engine side: it only moves messages.

Three tasks in the connection's nursery:

* the reader decodes each frame and hands the message to the engine's router (a synchronous
  call that never waits), which says what to send to whom;
* the writer (:meth:`Outbox.run`) writes what is queued for this worker;
* the keepalive pings the worker and drops it when no pong comes back in time (a stopped or
  half-open peer), unless the socket is in-process.

The lifecycle is a small state machine (:class:`ConnectionState`): ``OPEN`` while messages
flow both ways; ``CLOSING`` once the engine stops reading (a graceful stop: what is queued is
still delivered, then a 1001 close) or drops the worker (slow consumer, no pong: the
connection is cut); ``CLOSED`` when the socket is done.
"""

from __future__ import annotations

import enum
import logging
import random
from collections.abc import Callable
from typing import Final, final

import trio

from .._errors import RemoteProtocolError
from .._log_budget import WarningBudget
from .._ws import ConnectionClosed, MessageSocket, Outbox, WebSocket
from ..protocol import (
    DENSE_MIN,
    Message,
    RelayedInvoke,
    RelayedResult,
    check_containers,
    count_containers,
    decode_lazy,
)

logger = logging.getLogger("iii_trio.engine")

#: Messages routed from one worker before its reader lets other tasks run.
_YIELD_EVERY: Final = 32
#: Bytes queued for others (answers, forwarded calls) before its reader lets others run.
_YIELD_BYTES: Final = 1024 * 1024
_TELEMETRY_PREFIXES: Final = (b"OTLP", b"MTRC", b"LOGS")
#: Characters of a large message counted between two schedule points (~1 ms each).
_COUNT_SLICE: Final = 1024 * 1024
#: Seconds a stopping engine spends delivering what is queued and closing one connection.
GOODBYE_TIMEOUT: Final = 2.0


class ConnectionState(enum.Enum):
    OPEN = "open"
    #: No more reading: a graceful stop (queued messages still go out) or a drop.
    CLOSING = "closing"
    CLOSED = "closed"


#: The allowed transitions; anything else is a bug (see ``_move``).
TRANSITIONS: Final[dict[ConnectionState, frozenset[ConnectionState]]] = {
    ConnectionState.OPEN: frozenset({ConnectionState.CLOSING, ConnectionState.CLOSED}),
    ConnectionState.CLOSING: frozenset({ConnectionState.CLOSED}),
    ConnectionState.CLOSED: frozenset(),
}

OnMessage = Callable[[str, Message | RelayedInvoke | RelayedResult, bool], int]
OnBadMessage = Callable[[str, "str | bytes", RemoteProtocolError], None]


@final
class WorkerConnection:
    """The socket and outbox of one connected worker.

    Args:
        worker_id: the router's id for the worker.
        ws: its socket.
        outbox: where everything sent to it is queued (written by this connection's task).
        on_message: ``on_message(worker_id, msg, burst)`` for each decoded message (``burst``:
            more input is already buffered); returns the bytes it queued; must not block.
        on_bad_message: ``on_bad_message(worker_id, raw, error)`` for a frame that did not
            decode; must not block.
        ping_interval: seconds between keepalive pings (``None``: no keepalive).
        ping_timeout: seconds a pong may take before the worker is dropped.
        drop_warnings: where the WARNING for a drop goes (the engine shares one budget
            among its connections).
    """

    def __init__(
        self,
        worker_id: str,
        ws: MessageSocket,
        outbox: Outbox,
        *,
        on_message: OnMessage,
        on_bad_message: OnBadMessage,
        ping_interval: float | None,
        ping_timeout: float,
        drop_warnings: WarningBudget,
    ) -> None:
        self.worker_id = worker_id
        self.ws = ws
        self.outbox = outbox
        self._on_message = on_message
        self._on_bad_message = on_bad_message
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._drop_warnings = drop_warnings
        self.state = ConnectionState.OPEN
        #: Why the engine ended the connection, if it did (for the log).
        self.end_reason: str | None = None
        self._dropped = False
        #: Dropped by the keepalive: no pong in time.
        self.unresponsive = False
        self._read_scope = trio.CancelScope()
        self._scope = trio.CancelScope()
        self._written = trio.Event()

    def _move(self, state: ConnectionState) -> None:
        assert state in TRANSITIONS[self.state], f"{self.state} -> {state}"
        self.state = state

    def stop(self) -> None:
        """Stop reading from this worker; what is queued for it is still delivered, then the
        connection closes with 1001."""
        if self.state is ConnectionState.OPEN:
            self._move(ConnectionState.CLOSING)
            self.end_reason = "engine shutting down"
            self._read_scope.cancel()

    def drop(self, reason: str) -> bool:
        """Cut the connection now (nothing more is queued or written): the worker broke a
        rule that a message could not fix, e.g. it does not read what it must get. False if
        it was already dropped or closed."""
        if self.state is ConnectionState.CLOSED or self._dropped:
            return False
        if self.state is ConnectionState.OPEN:
            self._move(ConnectionState.CLOSING)
        self._dropped = True
        self.end_reason = reason
        self.outbox.close()
        self._drop_warnings.warning("dropping worker %s: %s", self.worker_id, reason)
        self._scope.cancel()
        return True

    async def run(self) -> str:
        """Serve the connection until either side ends it; returns why it ended."""
        ws = self.ws
        reason = "closed"
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write)
                    if self._ping_interval is not None and isinstance(ws, WebSocket):
                        nursery.start_soon(self._keepalive, ws, self._ping_interval)
                    with self._read_scope:
                        try:
                            await self._read_loop(ws)
                        except ConnectionClosed as exc:
                            reason = f"{exc.code} {exc.reason}".strip()
                    if self._read_scope.cancelled_caught:
                        # stop(): the writer delivers everything queued, then we say goodbye.
                        self.outbox.close()
                        with trio.move_on_after(GOODBYE_TIMEOUT):
                            await self._written.wait()
                            await ws.close(1001, "engine shutting down")
                    nursery.cancel_scope.cancel()
        finally:
            self.outbox.close()
            if self._dropped:
                await ws.abort()  # it would not read a close frame anyway
            elif not ws.closed:
                # The engine is stopping (we were cancelled): deliver what is queued for this
                # worker, then say goodbye with 1001.
                with trio.CancelScope(shield=True), trio.move_on_after(GOODBYE_TIMEOUT):
                    await self.outbox.flush()
                    await ws.close(1001, "engine shutting down")
                self.end_reason = "engine shutting down"
            if self.state is not ConnectionState.CLOSED:
                self._move(ConnectionState.CLOSED)
        return self.end_reason or reason

    async def _write(self) -> None:
        try:
            await self.outbox.run()
        finally:
            self._written.set()

    async def _read_loop(self, ws: MessageSocket) -> None:
        on_message = self._on_message
        on_bad_message = self._on_bad_message
        worker_id = self.worker_id
        receive_nowait = ws.receive_nowait
        count = queued = 0
        while True:
            raw: str | bytes | None = await ws.receive()
            # Then what the same read brought, without going back to the socket. Routing
            # never yields, and a read can hold many messages: yield now and then (and after
            # heavy work, such as large built-in answers), so that writers send what is
            # routed so far, other connections are served, and the next process can start
            # on it while we go on.
            while raw is not None:
                if isinstance(raw, bytes) and raw[:4] in _TELEMETRY_PREFIXES:
                    pass  # iii telemetry frames (OTLP/MTRC/LOGS): accepted and dropped
                else:
                    try:
                        if len(raw) > DENSE_MIN:
                            await _check_structure(raw)
                        msg = decode_lazy(raw)
                    except RemoteProtocolError as exc:
                        on_bad_message(worker_id, raw, exc)
                    else:
                        queued += on_message(worker_id, msg, ws.receive_buffered)
                count += 1
                if count >= _YIELD_EVERY or queued > _YIELD_BYTES:
                    await trio.lowlevel.checkpoint()
                    count = queued = 0
                raw = receive_nowait()

    async def _keepalive(self, ws: WebSocket, interval: float) -> None:
        if await keepalive(ws, interval, self._ping_timeout):
            self.unresponsive = True
            self.drop(f"no pong within {self._ping_timeout:g}s (not reading, or gone)")


async def keepalive(ws: WebSocket, interval: float, timeout: float) -> bool:
    """Ping ``ws`` every ``interval`` seconds until a pong takes longer than ``timeout`` (a
    peer that does not read cannot answer, and a stopped process neither): then return True.
    False if the connection ended first. Another task must be reading ``ws``.

    The first ping comes after a random part (half to all) of ``interval``: connections made
    together (a reconnecting fleet, a flood) are then pinged, and dropped, spread over time
    instead of all in one pass of the event loop."""
    count = 0
    period = interval * (0.5 + random.random() / 2)
    while True:
        await trio.sleep(period)  # sleep-ok: the keepalive period
        period = interval
        count += 1
        with trio.move_on_after(timeout) as scope:
            try:
                await ws.ping(count.to_bytes(8, "big"))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return False  # the reader sees the end of the connection
        if scope.cancelled_caught:
            return True


async def _check_structure(raw: str | bytes) -> None:
    """Count the arrays and objects of a large message before any of it is parsed, a slice at
    a time with a schedule point between slices, so that a huge one never holds up the other
    connections (see protocol.check_containers).

    Raises:
        RemoteProtocolError: the message is too dense to parse.
    """
    containers = 0
    for start in range(0, len(raw), _COUNT_SLICE):
        if start:
            await trio.lowlevel.checkpoint()
        containers += count_containers(raw, start, start + _COUNT_SLICE)
    check_containers(len(raw), containers)
