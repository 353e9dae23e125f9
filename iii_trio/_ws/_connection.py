"""A message-oriented RFC 6455 connection over any ``trio.abc.Stream``, after the handshake.

Theory of operation
-------------------
There is no background task: whoever calls :meth:`WebSocket.receive` drives the connection
(reads the socket, answers pings, completes the close handshake). At most one task may receive
at a time. Sends from any task are serialized by a lock and written with as few system calls
as possible (:meth:`WebSocket.send_many` coalesces a batch; on a socket, one ``writev``).
On a socket, reads and writes call ``readv``/``writev`` themselves (POSIX only), with one
schedule point per call instead of the two that trio's socket methods take.

:meth:`WebSocket.send_many_nowait` writes without a schedule point when nobody holds the lock:
one non-blocking system call from the calling task, which saves the task switch a hand-off to
a writer task costs (most of the latency of a small message). If the kernel takes only part of
the bytes, the rest is kept as the *tail*, which every later write sends first, so frames are
never interleaved; the caller then owes the connection a :meth:`WebSocket.flush`.

A write that is cancelled part-way leaves an unknown prefix of a frame on the wire, so
such a cancellation marks the connection broken and drops the TCP connection: the peer sees
an abnormal closure (1006), never a corrupt message.

Errors: :class:`ConnectionClosed` (a subclass of ``trio.BrokenResourceError``) when the peer
closed or the connection broke; ``trio.ClosedResourceError`` when *we* closed it first.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Final, final

import trio

from ._closing import ClosingSocket, ConnectionClosed, State
from ._frames import (
    ABNORMAL_CLOSURE,
    MAX_MESSAGE_FRAMES,
    NO_STATUS,
    NORMAL_CLOSURE,
    FrameError,
    FrameReader,
    Opcode,
    close_payload,
    encode_frame,
    parse_close,
)
from ._io import IOV_MAX, coalesce, encode_batch, recv_into, send_gathered

logger = logging.getLogger("iii_trio.ws")

#: Bytes asked of the socket per read. trio-websocket's 4 KiB costs 16 reads per 64 KiB chunk.
RECEIVE_SIZE: Final = 256 * 1024  # 256 KiB
#: Seconds to keep draining a peer we are closing for a protocol error (see ``_fail``).
FAIL_LINGER: Final = 2.0


@final
class WebSocket(ClosingSocket):
    """One established WebSocket connection.

    Args:
        stream: the transport, positioned just after the handshake.
        is_client: masks outgoing frames and expects unmasked ones when True.
        leftover: bytes the handshake read past its end.
        max_message_size: largest data message accepted (larger → close 1009).
        max_message_frames: most frames one fragmented message may span, control frames
            between its fragments included (more → close 1008).
        receive_size: bytes asked of the transport per read.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        is_client: bool,
        leftover: bytes = b"",
        max_message_size: int,
        max_message_frames: int = MAX_MESSAGE_FRAMES,
        receive_size: int = RECEIVE_SIZE,
    ) -> None:
        super().__init__()
        self._stream = stream
        self._is_client = is_client
        self._reader = FrameReader(
            expect_masked=not is_client,
            max_message_size=max_message_size,
            max_message_frames=max_message_frames,
        )
        if leftover:
            self._reader.feed(leftover)
        self._receive_size = receive_size
        #: The trio socket under a plain TCP stream, read and written with ``readv``/``writev``.
        self._socket = stream.socket if isinstance(stream, trio.SocketStream) else None
        #: Held while frames are written. A semaphore: trio.Lock also records its owner for
        #: deadlock detection, which tripled the cost of every uncontended send.
        self._send_lock = trio.Semaphore(1, max_value=1)
        #: Bytes a partial ``send_many_nowait`` left unwritten; every write sends them first.
        self._tail: list[memoryview] = []
        #: The peer's message size limit is not known over a socket.
        self.max_send_size: int | None = None
        self.in_process = False
        #: Pings waiting for their pong, by payload.
        self._pings: dict[bytes, trio.Event] = {}

    # --- receiving -------------------------------------------------------------------------

    _failure: tuple[int, str] | None = None
    #: What :meth:`receive_nowait` read but left to :meth:`receive`: a control frame, a
    #: text message that is not UTF-8, or the protocol error the reader raised.
    _held: tuple[Opcode, bytes] | FrameError | None = None

    def receive_nowait(self) -> str | bytes | None:
        """The next data message if it is already buffered whole, without waiting and
        without a schedule point; None otherwise (nothing buffered, another task receiving,
        or something :meth:`receive` must handle first: a control frame, an error, the end).
        A reader drains a burst with it after one :meth:`receive`."""
        if self._receiving or self._held is not None or self._failure is not None:
            return None
        if self.close_info is not None:
            return None
        try:
            event = self._reader.next_message()
        except FrameError as exc:
            self._held = exc
            return None
        if event is None:
            return None
        opcode, payload = event
        if opcode == Opcode.TEXT:
            try:
                return payload.decode("utf-8")
            except UnicodeDecodeError:
                pass
        elif opcode == Opcode.BINARY:
            return payload
        self._held = event
        return None

    async def _receive(self) -> str | bytes:
        reader = self._reader
        pong: bytes | None = None  # the payload of the latest ping not answered yet
        while True:
            if self._failure is not None:  # the reader is poisoned after a protocol error
                raise ConnectionClosed(*self._failure)
            try:
                held = self._held
                if held is None:
                    event = reader.next_message()
                else:
                    self._held = None
                    if isinstance(held, FrameError):
                        raise held
                    event = held
            except FrameError as exc:
                await self._fail(exc.code, exc.reason)
                raise ConnectionClosed(exc.code, exc.reason) from exc
            if event is None:
                if pong is not None:
                    await self._pong(pong)
                    pong = None
                await self._read_more()
                continue
            opcode, payload = event
            if opcode == Opcode.PING:
                # Pings read together get one pong, for the latest of them (RFC 6455 section
                # 5.5.3 allows it), sent before anything else happens: a flood of pings costs
                # a frame parse each, not a write each, and never queues anything.
                pong = payload
                continue
            if pong is not None:
                await self._pong(pong)
                pong = None
            if opcode == Opcode.BINARY:
                return payload
            if opcode == Opcode.TEXT:
                try:
                    return payload.decode("utf-8")
                except UnicodeDecodeError as exc:
                    await self._fail(1007, "text message is not valid UTF-8")
                    raise ConnectionClosed(1007, "text message is not valid UTF-8") from exc
            if opcode == Opcode.PONG:
                waiter = self._pings.pop(bytes(payload), None)
                if waiter is not None:
                    waiter.set()
                continue
            # Close frame.
            try:
                code, reason = parse_close(payload)
            except FrameError as exc:
                await self._fail(exc.code, exc.reason)
                raise ConnectionClosed(exc.code, exc.reason) from exc
            await self._on_peer_close(code, reason)
            raise ConnectionClosed(code, reason)

    async def _pong(self, payload: bytes) -> None:
        if self._state is State.OPEN:
            await self._send_frames([encode_frame(Opcode.PONG, payload, mask=self._is_client)])

    async def _read_more(self) -> None:
        sock = self._socket
        try:
            if sock is not None:
                # Straight into the frame reader's buffer: no bytes object per read and no
                # copy of it into the buffer (see FrameReader.get_buffer), which is taken
                # only once data is there (an idle connection holds none).
                reader = self._reader
                try:
                    size = await recv_into(
                        sock,
                        reader.get_buffer,
                        self._receive_size,
                        wait_first=not reader.last_read_full,
                    )
                except OSError as exc:
                    raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
                reader.buffer_updated(size)
            else:
                data = await self._stream.receive_some(self._receive_size)
                size = len(data)
                self._reader.feed(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            await self._lost()
            raise ConnectionClosed(ABNORMAL_CLOSURE, "connection lost") from exc
        if not size:
            await self._lost()
            raise ConnectionClosed(ABNORMAL_CLOSURE, "connection lost without a close frame")
        self.bytes_received += size

    async def _on_peer_close(self, code: int, reason: str) -> None:
        if self.close_info is None:
            self.close_info = (code, reason)
        if self._state is State.OPEN:
            # Echo the peer's code, as RFC 6455 section 5.5.1 asks.
            echo = NORMAL_CLOSURE if code == NO_STATUS else code
            self._state = State.CLOSE_SENT
            try:
                await self._send_frames(
                    [encode_frame(Opcode.CLOSE, close_payload(echo), mask=self._is_client)]
                )
            except trio.BrokenResourceError:
                pass  # the peer is gone already; it said goodbye, so this is not an error
        self._finish(code, reason)
        await trio.aclose_forcefully(self._stream)

    async def _lost(self) -> None:
        self._finish(ABNORMAL_CLOSURE, "connection lost")
        await trio.aclose_forcefully(self._stream)

    async def _fail(self, code: int, reason: str) -> None:
        """Answer a protocol violation with a Close and drop the connection.

        Before dropping it, read and discard what the peer is still sending (for at most
        :data:`FAIL_LINGER` seconds): closing a socket with unread data makes the kernel send
        a reset, and the peer would never see our close code.
        """
        logger.info("closing WebSocket after a protocol error: %s %s", code, reason)
        self._failure = (code, reason)
        if self._state is State.OPEN:
            self._state = State.CLOSE_SENT
            with trio.move_on_after(FAIL_LINGER):
                try:
                    await self._send_frames(
                        [
                            encode_frame(
                                Opcode.CLOSE, close_payload(code, reason), mask=self._is_client
                            )
                        ]
                    )
                    # Half-close (a lingering close): RFC 6455 clients wait for the server's
                    # TCP close after the close handshake, so without our FIN both sides
                    # would sit out FAIL_LINGER.
                    if isinstance(self._stream, trio.abc.HalfCloseableStream):
                        async with self._send_lock:
                            await self._stream.send_eof()
                    while await self._stream.receive_some(self._receive_size):
                        pass
                except trio.BrokenResourceError:
                    pass  # nothing more to tell a peer that is gone
        self._finish(code, reason)
        await trio.aclose_forcefully(self._stream)

    # --- sending ---------------------------------------------------------------------------

    async def send(self, message: str | bytes | memoryview) -> None:
        """Send one data message (text for ``str``, binary for ``bytes``).

        Raises:
            ConnectionClosed: the connection broke or the peer closed it.
            trio.ClosedResourceError: we closed it.
        """
        await self.send_many((message,))

    async def send_many(self, messages: Iterable[str | bytes | memoryview]) -> None:
        """Send several data messages with as few writes as possible.

        Raises:
            ConnectionClosed: the connection broke or the peer closed it.
            trio.ClosedResourceError: we closed it.
        """
        buffers = encode_batch(messages, mask=self._is_client)
        if self._state is not State.OPEN:
            await trio.lowlevel.checkpoint()
            self._raise_closed()
        await self._send_buffers(buffers)

    def send_many_nowait(self, messages: Iterable[str | bytes | memoryview]) -> bool:
        """Write several data messages now, without a schedule point, if nothing else is
        being written (no task holds the send lock, no tail is pending) and the transport is
        a socket. Returns False, having written nothing, otherwise (including when the
        socket cannot take a single byte at once, or has failed: :meth:`send_many` then
        reports why); the caller sends them the ordinary way.

        True means the messages are on their way: written whole, or written in part with
        the rest kept as the tail (:attr:`tail_pending`), which goes out before anything sent
        later. The caller must then make sure :meth:`flush` (or any send) runs.
        """
        sock = self._socket
        if sock is None or self._tail or self._state is not State.OPEN or not self._send_lock.value:
            return False
        fd = sock.fileno()
        if fd == -1:
            return False
        buffers = encode_batch(messages, mask=self._is_client)
        try:
            sent = os.writev(fd, buffers) if len(buffers) <= IOV_MAX else 0
        except OSError:
            # Would block, or the connection failed: the ordinary path waits, or reports
            # the failure (and closes the connection) properly.
            return False
        if not sent:
            return False
        total = 0
        for index, buffer in enumerate(buffers):
            size = len(buffer)
            if sent < total + size:
                rest = [memoryview(b).cast("B") for b in buffers[index:]]
                rest[0] = rest[0][sent - total :]
                self._tail = rest
                break
            total += size
        return True

    def trim_receive_buffer(self) -> None:
        """Hold only the received bytes not yet returned, in a buffer of their size: call it
        before leaving the connection unread for a while (backpressure). No effect while a
        task is receiving."""
        if not self._receiving:
            self._reader.trim()

    @property
    def receive_capacity(self) -> int:
        """Bytes of receive buffer this connection holds now: none while it waits for data
        after a small read, so thousands of idle connections cost no buffers."""
        return self._reader.capacity

    @property
    def receive_buffered(self) -> bool:
        """True if bytes of the peer's next message are already read (a burst goes on)."""
        return self._reader.buffered > 0

    @property
    def tail_pending(self) -> bool:
        """True while bytes of a partial :meth:`send_many_nowait` wait to be written."""
        return bool(self._tail)

    async def flush(self) -> None:
        """Write the tail a partial :meth:`send_many_nowait` left, if any (waiting for the
        socket as :meth:`send` does).

        Raises:
            ConnectionClosed: the connection broke or the peer closed it.
            trio.ClosedResourceError: we closed it.
        """
        if self._state is not State.OPEN and not self._tail:
            await trio.lowlevel.checkpoint()
            return
        await self._send_buffers([])

    async def _send_frames(self, frames: list[list[bytes | memoryview]]) -> None:
        await self._send_buffers(coalesce(frames))

    async def _send_buffers(self, buffers: list[bytes | memoryview]) -> None:
        """Write ``buffers`` (whole frames, in order) under the send lock."""
        # An uncontended lock is taken without a schedule point (``async with lock`` yields
        # even then): the write below yields anyway, so one pass through the scheduler per
        # batch is enough. A pending cancellation still raises here, before anything is
        # written, exactly as the lock's own checkpoint did.
        lock = self._send_lock
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            await lock.acquire()
        try:
            await self._send_buffers_locked(buffers)
        finally:
            lock.release()

    async def _send_buffers_locked(self, buffers: list[bytes | memoryview]) -> None:
        if self._state is State.CLOSED:
            self._tail = []
            self._raise_closed()
        if self._tail:
            # The rest of a partial send_many_nowait: it goes before anything else. It
            # counts as written from here on: if this write fails or is cancelled, the
            # connection is dropped anyway.
            tail, self._tail = self._tail, []
            buffers = [*tail, *buffers]
        if not buffers:
            await trio.lowlevel.checkpoint()
            return
        sent = False
        try:
            await send_gathered(self._stream, buffers)
            sent = True
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            sent = True  # not a cancellation: nothing half-written to worry about
            await self._lost()
            # If the peer's Close arrived meanwhile (another task is receiving), report
            # that rather than the dropped socket it led to.
            assert self.close_info is not None
            raise ConnectionClosed(*self.close_info) from exc
        finally:
            if not sent:
                # Cancelled (or failed) part-way through a frame: the byte stream is
                # corrupt from the peer's point of view. Drop the connection.
                self._closed_locally = True
                self._finish(ABNORMAL_CLOSURE, "send cancelled mid-frame")
                await trio.aclose_forcefully(self._stream)

    async def ping(self, payload: bytes = b"") -> None:
        """Send a Ping and wait for the Pong that echoes ``payload``. Pongs are read by
        :meth:`receive`, so another task must be receiving meanwhile.

        Raises:
            ValueError: ``payload`` is over 125 bytes, or a ping with it is already waiting.
            ConnectionClosed: the connection broke or the peer closed it (also while waiting).
            trio.ClosedResourceError: we closed it.
        """
        if len(payload) > 125 or payload in self._pings:
            raise ValueError("ping payloads are at most 125 bytes and unique while waiting")
        waiter = trio.Event()
        self._pings[payload] = waiter
        try:
            await self._send_frames([encode_frame(Opcode.PING, payload, mask=self._is_client)])
            await waiter.wait()
        finally:
            self._pings.pop(payload, None)
        if self._state is State.CLOSED:
            self._raise_closed()

    def _finish(self, code: int, reason: str) -> None:
        super()._finish(code, reason)
        for waiter in self._pings.values():
            waiter.set()  # ping() raises: the connection is over

    # --- closing ---------------------------------------------------------------------------

    async def close(self, code: int = NORMAL_CLOSURE, reason: str = "") -> None:
        """Start (or finish) the close handshake and close the transport.

        Waits at most :data:`CLOSE_TIMEOUT` for the peer's Close. Closes the transport even
        when cancelled. Idempotent.

        Raises:
            ValueError: ``code`` may not be sent (checked before anything happens).
        """
        payload = close_payload(code, reason)
        if self._state is State.CLOSED:
            await trio.lowlevel.checkpoint()
            return
        try:
            if self._state is State.OPEN:
                self._state = State.CLOSE_SENT
                self._closed_locally = True
                try:
                    await self._send_frames(
                        [encode_frame(Opcode.CLOSE, payload, mask=self._is_client)]
                    )
                except trio.BrokenResourceError:
                    return
            await self._await_peer_close()
        finally:
            if self.close_info is None:
                self._closed_locally = True
                self._finish(code, reason)
            await trio.aclose_forcefully(self._stream)

    async def wait_writable(self) -> None:
        """Wait until the transport can probably take more bytes.

        Raises:
            ConnectionClosed, trio.ClosedResourceError: as :meth:`send`.
        """
        async with self._send_lock:
            if self._state is State.CLOSED:
                self._raise_closed()
            await self._stream.wait_send_all_might_not_block()

    async def abort(self) -> None:
        """Drop the transport without a close handshake (the peer sees 1006)."""
        self._closed_locally = True
        self._finish(ABNORMAL_CLOSURE, "aborted")
        await trio.aclose_forcefully(self._stream)

    @property
    def send_stream(self) -> trio.abc.Stream:
        return self._stream
