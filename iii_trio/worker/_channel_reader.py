"""The read end of a channel: :class:`ChannelReader`, a ``trio.abc.ReceiveStream`` (see
:mod:`._channels` for the theory of operation)."""

from __future__ import annotations

import operator
from collections.abc import Awaitable, Callable
from typing import Final, final

import trio

from .._codes import READER_CLOSED
from .._ws import ConnectionClosed, MessageSocket
from .._ws._frames import NORMAL_CLOSURE
from ..protocol import StreamChannelRef
from ._channel_ends import CLOSE_CONNECT_TIMEOUT, ChannelEndpoint, Guard, is_clean, logger, spawn
from ._channel_errors import ChannelBroken, ChannelRefused, channel_error

#: Frames the reader's pump may hold before it stops reading the socket.
READER_QUEUE_FRAMES: Final = 32
#: Text messages kept for :meth:`ChannelReader.receive_message` when no callback is set.
MESSAGE_BACKLOG: Final = 10_000
#: Seconds a reader's pump spends on a close handshake when its owner is going away.
_LATE_CLOSE_TIMEOUT: Final = 2.0

MessageCallback = Callable[[str], Awaitable[None] | None]


@final
class ChannelReader(trio.abc.ReceiveStream):
    """The read end of a channel: ``receive_some``/``async for``/``read_all`` for data,
    ``on_message``/``receive_message`` for text messages, ``receive`` for both in order.

    ``b""`` means a clean end of stream, and nothing else does: an aborted or lost writer
    raises a :class:`ChannelBroken` subclass.
    """

    def __init__(
        self,
        ref: StreamChannelRef,
        endpoint: ChannelEndpoint,
        nursery: trio.Nursery,
        *,
        queue_frames: int = READER_QUEUE_FRAMES,
        attach_on_close: bool = True,
    ) -> None:
        if ref.direction != "read":
            raise ValueError("a ChannelReader needs a reader ref (direction 'read')")
        self.ref = ref
        self._endpoint = endpoint
        self._nursery = nursery
        self._send, self._items = trio.open_memory_channel[str | bytes](queue_frames)
        self._started = False
        self._ws: MessageSocket | None = None
        self._attached = trio.Event()  # the pump connected, or gave up
        #: The socket, when it is in-process and read by receive itself (no pump).
        self._direct: MessageSocket | None = None
        self._end: tuple[int, str] | None = None
        self._error: ChannelBroken | trio.BrokenResourceError | None = None
        self._partial = memoryview(b"")
        self._callbacks: list[MessageCallback] = []
        self._backlog: list[str] = []
        self._guard = Guard("receiving on this channel reader")
        self._closed = False
        self._close_with: tuple[int, str] = (1001, "reader went away")
        self._attach_on_close = attach_on_close
        self._pump_scope: trio.CancelScope | None = None
        self._pump_done = trio.Event()
        self.bytes_received = 0
        #: Clock time this end last received something (or was made): a call's deadline
        #: follows it.
        self.last_progress = trio.current_time()

    # --- the pump ------------------------------------------------------------------------

    def _start(self) -> None:
        if not self._started:
            self._started = True
            self._nursery.start_soon(self._pump)

    async def _pump(self) -> None:
        try:
            async with self._send:
                try:
                    ws = await self._endpoint.connect(self.ref)
                except ChannelRefused as exc:
                    self._error = exc
                    return
                except (OSError, trio.TooSlowError) as exc:
                    self._error = trio.BrokenResourceError(f"cannot reach the engine: {exc}")
                    return
                self._ws = ws
                if ws.in_process:
                    # Nothing to pump: the socket's own queue is this reader's queue, and
                    # receive reads it directly (one task switch less per frame). This task
                    # only owns the socket: it closes it when cancelled.
                    self._direct = ws
                self._attached.set()
                try:
                    with trio.CancelScope() as self._pump_scope:
                        if self._direct is not None:
                            if not self._closed:
                                await trio.sleep_forever()
                        else:
                            while not self._closed:
                                item = await ws.receive()
                                try:
                                    # No schedule point per frame while the queue has room
                                    # (the socket reads yield); wait only when it is full.
                                    self._send.send_nowait(item)
                                except trio.WouldBlock:
                                    await self._send.send(item)
                except ConnectionClosed as exc:
                    self._ended(exc)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # this reader was closed while a frame was on its way to it
                finally:
                    if not ws.closed:
                        code, reason = self._close_with
                        with trio.CancelScope(shield=True), trio.move_on_after(_LATE_CLOSE_TIMEOUT):
                            await ws.close(code, reason)
                        await ws.abort()
        finally:
            if self._end is None and self._error is None and not self._closed:
                # Cancelled from outside (the worker or scope owning this reader closed):
                # the stream did not end, so it must not look like it did.
                self._error = ChannelBroken(1001, "the scope owning this channel reader closed")
            self._attached.set()
            self._pump_done.set()

    # --- receiving -----------------------------------------------------------------------

    async def receive(self) -> bytes | str:
        """The next frame in order: ``bytes`` for data, ``str`` for a text message.

        Raises:
            trio.EndOfChannel: clean end of stream.
            ChannelBroken: the writer aborted, was lost, or the channel expired.
            trio.ClosedResourceError: this reader was closed.
            trio.BusyResourceError: another task is receiving.
        """
        with self._guard:
            if self._partial:
                chunk = bytes(self._partial)
                self._partial = memoryview(b"")
                await trio.lowlevel.checkpoint()
                return chunk
            return await self._next_item()

    async def _next_item(self) -> bytes | str:
        if self._closed:
            raise trio.ClosedResourceError("this channel reader was closed")
        self._start()
        if not self._attached.is_set():
            await self._attached.wait()
            if self._closed:
                raise trio.ClosedResourceError("this channel reader was closed")
        if self._direct is not None:
            return await self._receive_direct(self._direct)
        try:
            item = await self._items.receive()
        except trio.EndOfChannel:
            # A closed memory channel raises without a schedule point; every receive has one.
            await trio.lowlevel.cancel_shielded_checkpoint()
            if self._error is not None:
                raise self._error from None
            raise
        except trio.ClosedResourceError:
            raise trio.ClosedResourceError("this channel reader was closed") from None
        self.last_progress = trio.current_time()
        if isinstance(item, bytes):
            self.bytes_received += len(item)
        return item

    def _ended(self, exc: ConnectionClosed) -> None:
        """The engine closed the socket: a clean end, or the error every receive raises."""
        self._end = (exc.code, exc.reason)
        if not is_clean(exc.code):
            self._error = channel_error(exc.code, exc.reason)

    async def _receive_direct(self, ws: MessageSocket) -> bytes | str:
        """``_next_item`` for an in-process socket: the frame, or the end as the pump would
        have reported it."""
        try:
            item = await ws.receive()
        except ConnectionClosed as exc:
            if self._closed:
                raise trio.ClosedResourceError("this channel reader was closed") from None
            if self._end is None:
                self._ended(exc)
                if self._pump_scope is not None:
                    self._pump_scope.cancel()  # the stream is over: the owner task may go
            if self._error is not None:
                raise self._error from None
            raise trio.EndOfChannel from None
        except trio.ClosedResourceError:
            # Closed under us: by aclose (ours), or by the owning scope going away.
            if self._error is not None and not self._closed:
                raise self._error from None
            raise trio.ClosedResourceError("this channel reader was closed") from None
        self.last_progress = trio.current_time()
        if isinstance(item, bytes):
            self.bytes_received += len(item)
        return item

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Up to ``max_bytes`` of data; ``b""`` only at a clean end of stream. Text messages
        met on the way go to the ``on_message`` callbacks, or to the backlog read by
        :meth:`receive_message`.

        Raises:
            ChannelBroken: the writer aborted, was lost, or the channel expired.
            trio.ClosedResourceError: this reader was closed.
            trio.BusyResourceError: another task is receiving.
            ValueError: ``max_bytes`` < 1.  TypeError: ``max_bytes`` is not an integer.
        """
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        while True:
            if self._partial:
                with self._guard:
                    if self._closed:
                        raise trio.ClosedResourceError("this channel reader was closed")
                    view = self._partial
                    take = len(view) if max_bytes is None else max_bytes
                    self._partial = view[take:]
                    await trio.lowlevel.checkpoint()
                    return bytes(view[:take])
            direct = self._direct
            try:
                if direct is not None and not self._closed:
                    with self._guard:  # receive() minus the steps an attached reader needs not
                        item = await self._receive_direct(direct)
                else:
                    item = await self.receive()
            except trio.EndOfChannel:
                return b""
            if isinstance(item, str):
                await self._on_text(item)
                continue
            if not item:
                continue  # an empty data frame means nothing; b"" is kept for end of stream
            if max_bytes is None or len(item) <= max_bytes:
                return item
            self._partial = memoryview(item)[max_bytes:]
            self.bytes_received -= len(self._partial)
            return item[:max_bytes]

    read = receive_some

    async def read_all(self) -> bytes:
        """Everything until the clean end of stream.

        Raises:
            ChannelBroken: the stream did not end cleanly.
        """
        parts = []
        async for chunk in self:
            parts.append(chunk)
        return b"".join(parts)

    async def _on_text(self, text: str) -> None:
        if self._callbacks:
            for callback in self._callbacks:
                outcome = callback(text)
                if outcome is not None:
                    await outcome
            return
        if len(self._backlog) >= MESSAGE_BACKLOG:
            logger.warning(
                "channel %s: more than %d unread text messages; dropping the oldest",
                self.ref.channel_id,
                MESSAGE_BACKLOG,
            )
            del self._backlog[0]
        self._backlog.append(text)

    def on_message(self, callback: MessageCallback) -> None:
        """Call ``callback(text)`` (sync or async) for each text message, in order with the
        data, while the data is read. Starts the connection if it was not started."""
        self._callbacks.append(callback)
        self._start()

    async def receive_message(self) -> str:
        """The next text message. Data frames met on the way are kept for ``receive_some``.

        Raises:
            trio.EndOfChannel: the stream ended cleanly with no further message.
            ChannelBroken, trio.ClosedResourceError, trio.BusyResourceError: as ``receive``.
        """
        with self._guard:
            if self._backlog:
                await trio.lowlevel.checkpoint()
                return self._backlog.pop(0)
            while True:
                item = await self._next_item()
                if isinstance(item, str):
                    return item
                # Keep data for receive_some: at most what the writer sent before its next
                # message.
                self._partial = memoryview(bytes(self._partial) + item)

    # --- closing -------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close this end. Before the end of stream this tells the writer
        (:class:`ChannelReaderClosed`), connecting first if needed."""
        await self._close(NORMAL_CLOSURE, "")

    close = aclose

    async def abort(self, reason: str = "reader aborted") -> None:
        """Close this end with a reason the writer sees (code 4002)."""
        await self._close(READER_CLOSED, reason)

    async def _close(self, code: int, reason: str) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        self._close_with = (code, reason)
        self._items.close()  # wakes a task blocked in receive with ClosedResourceError
        if self._end is not None or not (self._started or self._attach_on_close):
            await trio.lowlevel.checkpoint()
            return
        if not self._started:
            # Never used: attach only to tell the writer that nobody will read.
            self._started = True
            try:
                await self._attach_and_close(code, reason)
            except trio.Cancelled:
                spawn(self._nursery, self._attach_and_close, code, reason)
                raise
            return
        if self._pump_scope is not None:
            self._pump_scope.cancel()
        # The pump closes the socket; if we are cancelled here it still does, in the background.
        await self._pump_done.wait()

    async def _attach_and_close(self, code: int, reason: str) -> None:
        try:
            with trio.move_on_after(CLOSE_CONNECT_TIMEOUT):
                ws = await self._endpoint.connect(self.ref)
                await ws.close(code, reason)
        except ChannelRefused as exc:
            # 404/409: this ref was handed to someone who attached (or the channel is over),
            # so there is no writer left for this unused end to tell.
            logger.debug("channel %s: reader end not needed (%s)", self.ref.channel_id, exc)
        except (trio.BrokenResourceError, OSError, trio.TooSlowError) as exc:
            logger.warning("could not tell the writer of channel %s: %s", self.ref.channel_id, exc)
