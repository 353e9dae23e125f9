"""WebSockets between two tasks of one process: messages passed by reference.

Theory of operation
-------------------
:func:`memory_websocket_pair` makes two :class:`MemoryWebSocket` halves joined by one
:class:`_Inbox` per direction. A send appends the message objects to the peer's inbox (``bytes``
and ``str`` as they are; a ``memoryview`` that spans a whole ``bytes`` object as that object;
anything else copied once, since the sender may reuse its buffer); a receive pops them. No
framing, masking or copying: this is the transport for workers embedded with their engine.

Everything else behaves as :class:`WebSocket` does over a socket, so the engine and the SDK run
the same code on both:

* backpressure: a send waits while the peer's inbox holds :data:`PIPE_CAPACITY` bytes or more
  (a batch is admitted whole once there is room, so the inbox exceeds it by at most one batch);
* the close handshake: ``close`` queues a Close after the data already sent, the peer's
  receive echoes it, and both ends then report ``ConnectionClosed`` with the same codes and
  reasons (cut to 123 bytes) a socket would carry;
* ``abort``, or a half going away without a close, is a lost connection (1006) to the peer
  once it has read what was sent before;
* a message over the receiver's ``max_message_size`` fails the connection with 1009 when the
  receiver reaches it, as the receiving frame parser would.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable
from typing import Final, final

import attrs
import trio

from ._closing import ClosingSocket, ConnectionClosed, State
from ._frames import (
    ABNORMAL_CLOSURE,
    MESSAGE_TOO_BIG,
    NO_STATUS,
    NORMAL_CLOSURE,
    close_payload,
    parse_close,
)

#: Bytes a half may have queued for its peer before its sends wait (like a socket buffer).
PIPE_CAPACITY: Final = 4 * 1024 * 1024
#: Bytes each message counts on top of its length, so floods of tiny messages are bounded too.
_MESSAGE_COST: Final = 64


@final
@attrs.frozen
class _Oversize:
    """Stands in for a message larger than the receiver accepts."""

    size: int


@final
@attrs.define(eq=False)
class _Inbox:
    """One direction of a pair: what the sender queued and the receiver has not taken."""

    items: collections.deque[str | bytes | _Oversize] = attrs.field(factory=collections.deque)
    size: int = 0
    #: The sender's Close ``(code, reason)``, read after every queued item.
    end: tuple[int, str] | None = None
    #: The sender's half is gone; read after the items and the Close, if any.
    sender_gone: bool = False
    #: The receiver's half is gone: sends fail, queued items are dropped.
    receiver_gone: bool = False
    readable: trio.lowlevel.ParkingLot = attrs.field(factory=trio.lowlevel.ParkingLot)
    writable: trio.lowlevel.ParkingLot = attrs.field(factory=trio.lowlevel.ParkingLot)
    #: The receiver's :attr:`MemoryWebSocket.receive_hook`.
    hook: Callable[[str | bytes], bool] | None = None

    def full(self) -> bool:
        return self.size >= PIPE_CAPACITY and bool(self.items)

    def wake_reader(self) -> None:
        if self.readable:
            self.readable.unpark_all()

    def wake_writers(self) -> None:
        if self.writable:
            self.writable.unpark_all()


async def _yield_unless(parked: bool) -> None:
    """The schedule point every receive has, unless it already parked (a state change made
    before it is kept even if the caller is cancelled here)."""
    if not parked:
        await trio.lowlevel.cancel_shielded_checkpoint()


def _freeze(message: str | bytes | memoryview) -> str | bytes:
    """The message as an immutable object, copied only if it is not one already.

    Raises:
        UnicodeEncodeError: a ``str`` that is not valid Unicode text (as a socket would).
        TypeError: not ``str``, ``bytes`` or a buffer.
    """
    if isinstance(message, (bytes, str)):
        if isinstance(message, str) and not message.isascii():
            message.encode("utf-8")  # lone surrogates cannot travel in a text frame
        return message
    view = memoryview(message)
    base = view.obj
    if type(base) is bytes and view.nbytes == len(base) and view.c_contiguous:
        return base
    return view.tobytes()


def _frozen(messages: Iterable[str | bytes | memoryview]) -> list[str | bytes]:
    """:func:`_freeze` applied to each message (``bytes``, the common case, as it is).

    Raises: as :func:`_freeze`.
    """
    return [m if type(m) is bytes else _freeze(m) for m in messages]


@final
class MemoryWebSocket(ClosingSocket):
    """One half of an in-process WebSocket (:func:`memory_websocket_pair`). Same interface
    and errors as :class:`WebSocket`."""

    def __init__(
        self,
        inbox: _Inbox,
        outbox: _Inbox,
        *,
        max_message_size: int,
        peer_max_message_size: int,
    ) -> None:
        super().__init__()
        self._in = inbox
        self._out = outbox
        self._max_message_size = max_message_size
        self.max_send_size: int | None = peer_max_message_size
        self.in_process = True
        self._waiting_senders = 0

    # --- receiving (receive() is ClosingSocket's: the very object the peer sent) -----------

    async def _receive(self) -> str | bytes:
        inbox = self._in
        await trio.lowlevel.checkpoint_if_cancelled()
        parked = False  # parking was this call's schedule point; no second one needed
        while True:
            if inbox.items:
                message = inbox.items.popleft()
                if isinstance(message, _Oversize):
                    inbox.size -= _MESSAGE_COST + message.size
                    inbox.wake_writers()
                    reason = f"message over the {self._max_message_size} byte limit"
                    self._end(MESSAGE_TOO_BIG, reason, answer=(MESSAGE_TOO_BIG, reason))
                    await _yield_unless(parked)
                    raise ConnectionClosed(MESSAGE_TOO_BIG, reason)
                size = len(message)
                inbox.size -= _MESSAGE_COST + size
                inbox.wake_writers()
                self.bytes_received += size
                await _yield_unless(parked)
                return message
            if inbox.end is not None:
                code, reason = inbox.end
                self._on_peer_close(code, reason)
                await _yield_unless(parked)
                raise ConnectionClosed(code, reason)
            if inbox.sender_gone:
                self._finish(ABNORMAL_CLOSURE, "connection lost")
                self._disconnect()
                await _yield_unless(parked)
                raise ConnectionClosed(ABNORMAL_CLOSURE, "connection lost without a close frame")
            await inbox.readable.park()
            parked = True

    def _on_peer_close(self, code: int, reason: str) -> None:
        # Echo the peer's code, as RFC 6455 section 5.5.1 asks.
        self._end(code, reason, answer=(NORMAL_CLOSURE if code == NO_STATUS else code, ""))

    def _end(self, code: int, reason: str, *, answer: tuple[int, str]) -> None:
        """The connection is over with ``(code, reason)``; tell the peer ``answer`` unless
        our Close went out already."""
        if self._state is State.OPEN:
            self._send_close(*answer)
        self._finish(code, reason)
        self._disconnect()

    # --- sending ---------------------------------------------------------------------------

    async def send(self, message: str | bytes | memoryview) -> None:
        """Send one message (text for ``str``, binary otherwise).

        Raises:
            ConnectionClosed: the peer closed or went away.
            trio.ClosedResourceError: we closed it.
        """
        await self.send_many((message,))

    async def send_many(self, messages: Iterable[str | bytes | memoryview]) -> None:
        """Send several messages, in order, all at once when the peer's inbox has room.

        Raises:
            ConnectionClosed: the peer closed or went away.
            trio.ClosedResourceError: we closed it.
        """
        batch = _frozen(messages)
        outbox = self._out
        # The schedule point comes first, before anything is sent: a receiver woken by our
        # previous send then runs, deals with that message and waits again before this one
        # arrives, so the receive hook can take it (no lockstep of sender and receiver).
        if not outbox.full():
            await trio.lowlevel.checkpoint()
        if outbox.full():
            self._waiting_senders += 1
            try:
                await self._wait_for_room()
            finally:
                self._waiting_senders -= 1
        self._check_sendable()
        self._deliver(batch)

    def send_many_nowait(self, messages: Iterable[str | bytes | memoryview]) -> bool:
        """Queue several messages for the peer now, without a schedule point, if its inbox
        has room, no other send waits for room and the connection is open; otherwise return
        False having sent nothing (and :meth:`send_many` waits, or reports why)."""
        outbox = self._out
        if (
            self._state is not State.OPEN
            or outbox.receiver_gone
            or outbox.full()
            or self._waiting_senders  # they go first
        ):
            return False
        try:
            batch = _frozen(messages)
        except (UnicodeEncodeError, TypeError):
            return False  # send_many raises it
        self._deliver(batch)
        return True

    async def _wait_for_room(self) -> None:
        """Park until the peer's inbox has room, or sending is over either way."""
        outbox = self._out
        while outbox.full() and self._state is State.OPEN and not outbox.receiver_gone:
            await outbox.writable.park()

    def _check_sendable(self) -> None:
        if self._state is not State.OPEN:
            self._raise_closed()
        if self._out.receiver_gone:
            self._finish(ABNORMAL_CLOSURE, "connection lost")
            self._disconnect()
            assert self.close_info is not None
            raise ConnectionClosed(*self.close_info)

    def _deliver(self, batch: list[str | bytes]) -> None:
        outbox = self._out
        limit = self.max_send_size
        assert limit is not None
        items = outbox.items
        # The hook may take a message only while the receiver waits in receive with nothing
        # queued: it has then dealt with every earlier message (one it has taken but not yet
        # dealt with would be overtaken).
        hook = outbox.hook if outbox.readable else None
        for message in batch:
            size = len(message)
            if hook is not None and not items and size <= limit and hook(message):
                continue  # taken by the receiver's hook, in this task
            items.append(message if size <= limit else _Oversize(size))
            outbox.size += _MESSAGE_COST + size
        if items:
            outbox.wake_reader()

    def _send_close(self, code: int, reason: str) -> None:
        outbox = self._out
        if not outbox.receiver_gone and outbox.end is None:
            outbox.end = parse_close(close_payload(code, reason))  # as the peer would read it
            outbox.wake_reader()
        self._state = State.CLOSE_SENT

    @property
    def receive_hook(self) -> Callable[[str | bytes], bool] | None:
        """Called by the *sender's* task with each message it sends while a task waits in
        :meth:`receive` with nothing queued; returning True means the message was taken and
        will not be queued (the receiver never sees it). Lets a relay pass a message on
        without a task switch. Must not block or raise."""
        return self._in.hook

    @receive_hook.setter
    def receive_hook(self, hook: Callable[[str | bytes], bool] | None) -> None:
        self._in.hook = hook

    # The protocol's no-op members: nothing is ever written partly or read ahead.

    @property
    def tail_pending(self) -> bool:
        return False

    async def flush(self) -> None:
        await trio.lowlevel.checkpoint()

    @property
    def receive_buffered(self) -> bool:
        """True if the peer's next message is already queued (a burst goes on)."""
        return bool(self._in.items)

    def trim_receive_buffer(self) -> None:
        pass

    def receive_nowait(self) -> str | bytes | None:
        """The next message if one is queued and nothing else is pending (see
        :meth:`WebSocket.receive_nowait`); else None, and :meth:`receive` says what comes."""
        inbox = self._in
        if self._receiving or self.close_info is not None or not inbox.items:
            return None
        message = inbox.items[0]
        if isinstance(message, _Oversize):
            return None
        inbox.items.popleft()
        size = len(message)
        inbox.size -= _MESSAGE_COST + size
        inbox.wake_writers()
        self.bytes_received += size
        return message

    async def wait_writable(self) -> None:
        """Wait until the peer's inbox has room.

        Raises:
            ConnectionClosed, trio.ClosedResourceError: as :meth:`send`.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        await self._wait_for_room()
        if self._state is State.CLOSED:
            self._raise_closed()
        await trio.lowlevel.cancel_shielded_checkpoint()

    # --- closing ---------------------------------------------------------------------------

    async def close(self, code: int = NORMAL_CLOSURE, reason: str = "") -> None:
        """Start (or finish) the close handshake, waiting at most ``CLOSE_TIMEOUT`` for the
        peer's answer. Closes even when cancelled. Idempotent.

        Raises:
            ValueError: ``code`` may not be sent (checked before anything happens).
        """
        close_payload(code, reason)
        if self._state is State.CLOSED:
            await trio.lowlevel.checkpoint()
            return
        try:
            if self._state is State.OPEN:
                self._closed_locally = True
                if self._out.receiver_gone:
                    return
                self._send_close(code, reason)
            await self._await_peer_close()
        finally:
            if self.close_info is None:
                self._closed_locally = True
                self._finish(code, reason)
            self._disconnect()

    async def abort(self) -> None:
        """Go away without a close handshake (the peer sees 1006)."""
        self._closed_locally = True
        self._finish(ABNORMAL_CLOSURE, "aborted")
        self._disconnect()
        await trio.lowlevel.cancel_shielded_checkpoint()

    def _disconnect(self) -> None:
        """This half is gone: drop what the peer queued for us, and tell the peer."""
        inbox, outbox = self._in, self._out
        if not inbox.receiver_gone:
            inbox.receiver_gone = True
            inbox.items.clear()
            inbox.size = 0
            inbox.wake_writers()
        if not outbox.sender_gone:
            outbox.sender_gone = True
            outbox.wake_reader()


def memory_websocket_pair(
    *, client_max_message_size: int, server_max_message_size: int
) -> tuple[MemoryWebSocket, MemoryWebSocket]:
    """``(client, server)``: two joined halves; each refuses messages over its own limit."""
    to_server, to_client = _Inbox(), _Inbox()
    client = MemoryWebSocket(
        to_client,
        to_server,
        max_message_size=client_max_message_size,
        peer_max_message_size=server_max_message_size,
    )
    server = MemoryWebSocket(
        to_server,
        to_client,
        max_message_size=server_max_message_size,
        peer_max_message_size=client_max_message_size,
    )
    return client, server
