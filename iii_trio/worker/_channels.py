"""Channel ends as trio streams: :class:`ChannelWriter` (a ``trio.abc.SendStream``) and
:class:`ChannelReader` (a ``trio.abc.ReceiveStream``).

Theory of operation
-------------------
Each end is one WebSocket to the engine's ``/ws/channels/{id}``, opened lazily on first use
(or by ``aclose``, so a writer closed before it wrote still delivers a clean EOF, and a reader
closed unread still tells the writer). Binary frames carry data, text frames carry messages;
both keep their order.

The reader runs a pump task that moves frames from the socket into a bounded memory channel;
``receive_some`` takes them from there. Over an in-process socket (``Engine.local_dialer``)
``receive_some`` reads the socket itself, whose queue is bounded too, and the pump task only
owns the socket. The writer writes frames directly (``send_all`` →
frames of at most ``chunk_size`` bytes, coalesced into few socket writes) and runs a watcher
task that reads the socket, so a reader that leaves is noticed even while the writer is idle.
The tasks live in the nursery that owns the end: the invocation's, the worker's, or an
:func:`open_channel` block's.

End states: the reader returns ``b""`` only after the engine's close 1000 (or 1005, which is
all an original iii engine ever sends). Any other close raises a :class:`ChannelBroken`
subclass that carries the code and reason.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, final
from urllib.parse import quote, urlsplit

import attrs
import trio

from .._codes import READER_CLOSED, WRITER_ABORTED
from .._ws import ConnectionClosed, Dialer, HandshakeError, MessageSocket, connect_message_socket
from .._ws._client import CONNECT_TIMEOUT
from .._ws._frames import NO_STATUS, NORMAL_CLOSURE
from ..protocol import StreamChannelRef
from ._channel_errors import ChannelBroken, ChannelRefused, channel_error
from ._connect import channel_refusal_reason

logger = logging.getLogger("iii_trio.channels")

#: Largest data frame a writer sends. The official Python reader accepts frames up to 1 MiB.
CHUNK_SIZE: Final = 256 * 1024  # 256 KiB
#: Frames the reader's pump may hold before it stops reading the socket.
READER_QUEUE_FRAMES: Final = 32
#: Largest frame a reader accepts.
MAX_FRAME: Final = 64 * 1024 * 1024
#: Text messages kept for :meth:`ChannelReader.receive_message` when no callback is set.
MESSAGE_BACKLOG: Final = 10_000
#: Seconds ``aclose`` may spend connecting just to deliver an end-of-stream.
CLOSE_CONNECT_TIMEOUT: Final = 10.0
_SEND_BATCH: Final = 4  # frames per socket write batch
#: Seconds a reader's pump spends on a close handshake when its owner is going away.
_LATE_CLOSE_TIMEOUT: Final = 2.0

MessageCallback = Callable[[str], Awaitable[None] | None]


@attrs.frozen
class ChannelEndpoint:
    """Where channel sockets of one engine are: its base URL and the headers to send."""

    url: str
    headers: tuple[tuple[str, str], ...] = ()
    dialer: Dialer | None = None
    connect_timeout: float = CONNECT_TIMEOUT

    def url_for(self, ref: StreamChannelRef) -> str:
        parts = urlsplit(self.url)
        query = f"key={quote(ref.access_key, safe='')}&dir={ref.direction}"
        if parts.query:
            query = f"{parts.query}&{query}"
        return (
            f"{parts.scheme}://{parts.netloc}/ws/channels/{quote(ref.channel_id, safe='')}?{query}"
        )

    async def connect(self, ref: StreamChannelRef) -> MessageSocket:
        """Raises: ChannelRefused, OSError, trio.TooSlowError."""
        try:
            return await connect_message_socket(
                self.url_for(ref),
                headers=self.headers,
                max_message_size=MAX_FRAME,
                dialer=self.dialer,
                connect_timeout=self.connect_timeout,
            )
        except HandshakeError as exc:
            reason = channel_refusal_reason(exc, self.url, self.headers)
            raise ChannelRefused(exc.status, reason) from exc


class _Guard:
    """Raise ``BusyResourceError`` when two tasks use one end the same way at once."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._held = False

    def __enter__(self) -> None:
        if self._held:
            raise trio.BusyResourceError(f"another task is already {self._what}")
        self._held = True

    def __exit__(self, *exc: object) -> None:
        self._held = False


def _is_clean(code: int) -> bool:
    return code in (NORMAL_CLOSURE, NO_STATUS)


@final
class ChannelWriter(trio.abc.SendStream):
    """The write end of a channel. ``send_all``/``write`` data, ``send_message`` text,
    ``aclose``/``close`` for a clean end of stream, ``abort`` to fail it.

    Made by :meth:`Worker.create_channel` / :meth:`Worker.open_channel`, or handed to a
    function handler in place of a writer ref; open a ref yourself with
    :meth:`Worker.channel_writer`.

    ``attach_on_close``: whether ``aclose`` attaches to the engine when nothing was sent yet
    (so the reader gets its end of stream). True for ends opened from a ref; False for the
    local ends of a channel you created, whose refs you may have handed to someone else.
    """

    def __init__(
        self,
        ref: StreamChannelRef,
        endpoint: ChannelEndpoint,
        nursery: trio.Nursery,
        *,
        chunk_size: int = CHUNK_SIZE,
        attach_on_close: bool = True,
    ) -> None:
        if ref.direction != "write":
            raise ValueError("a ChannelWriter needs a writer ref (direction 'write')")
        self.ref = ref
        self._endpoint = endpoint
        self._nursery = nursery
        self._chunk = chunk_size
        self._ws: MessageSocket | None = None
        self._connect_lock = trio.Lock()
        self._guard = _Guard("sending on this channel writer")
        self._closed = False
        self._error: ChannelBroken | None = None
        self._attach_on_close = attach_on_close
        self._changed = trio.Event()
        self._sending = False
        self.bytes_sent = 0

    async def _socket(self) -> MessageSocket:
        if self._ws is not None:  # fast path: every send_all after the first
            return self._ws
        async with self._connect_lock:
            if self._ws is None:
                if self._error is not None:
                    raise self._error
                try:
                    ws = await self._endpoint.connect(self.ref)
                except ChannelRefused as exc:
                    self._error = exc
                    raise
                except (OSError, trio.TooSlowError) as exc:
                    raise trio.BrokenResourceError(f"cannot reach the engine: {exc}") from exc
                self._ws = ws
                self._nursery.start_soon(self._watch, ws)
            return self._ws

    async def _watch(self, ws: MessageSocket) -> None:
        # The engine only ever sends a Close here (4002 reader closed, 4003 reader lost, ...).
        try:
            while True:
                await ws.receive()
        except ConnectionClosed as exc:
            if not self._closed and self._error is None:
                self._error = channel_error(exc.code, exc.reason)
                logger.debug("writer of channel %s stopped: %s", self.ref.channel_id, self._error)
        except trio.ClosedResourceError:
            pass  # we closed it
        finally:
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _check(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this channel writer was closed")
        if self._error is not None:
            raise self._error

    def _failed(self, exc: BaseException) -> BaseException:
        if self._closed:
            return trio.ClosedResourceError("this channel writer was closed")
        if self._error is None:
            code, reason = (
                (exc.code, exc.reason) if isinstance(exc, ConnectionClosed) else (1006, str(exc))
            )
            self._error = channel_error(code, reason)
        return self._error

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` as one or more binary frames.

        Cancelling it part-way breaks the channel: the reader then sees an error, never a
        clean end (it cannot know how much arrived).

        Raises:
            ChannelReaderClosed: the reader closed its end (a ``trio.BrokenResourceError``).
            ChannelBroken: the channel broke for another reason (code and reason attached).
            trio.BrokenResourceError: the engine could not be reached.
            trio.ClosedResourceError: this writer was closed or aborted.
            trio.BusyResourceError: another task is in ``send_all`` on this writer.
        """
        with self._guard:
            self._check()
            ws = self._ws
            frames: Sequence[bytes | memoryview]
            # A socket that passes objects (in-process) takes data as large as the engine
            # accepts, so a bytes object travels whole, never copied; over the network,
            # frames of chunk_size.
            if (
                type(data) is bytes
                and ws is not None
                and 0 < len(data) <= (ws.max_send_size or self._chunk)
            ):
                frames = (data,)  # the common case: one frame, the caller's own object
                size = len(data)
            else:
                view = memoryview(data).cast("B")
                size = len(view)
                if not size:
                    await trio.lowlevel.checkpoint()
                    return
                ws = await self._socket()
                self._check()
                chunk = ws.max_send_size or self._chunk
                frames = [view[i : i + chunk] for i in range(0, size, chunk)]
            batches = (
                (frames,)  # the common case, without slicing
                if len(frames) <= _SEND_BATCH
                else [frames[i : i + _SEND_BATCH] for i in range(0, len(frames), _SEND_BATCH)]
            )
            self._sending = True
            try:
                for batch in batches:
                    await ws.send_many(batch)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise self._failed(exc) from exc
            finally:
                self._sending = False
            self.bytes_sent += size

    write = send_all

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until the socket can take more data (or the writer is closed or broken).

        Raises:
            trio.ClosedResourceError: this writer was closed.
            ChannelBroken: the channel broke.
            trio.BusyResourceError: another task is sending or waiting on this writer.
        """
        with self._guard:
            self._check()
            ws = self._ws
            if ws is None:
                await trio.lowlevel.checkpoint()
                return
            changed = self._changed
            async with trio.open_nursery() as nursery:

                async def until_writable() -> None:
                    try:
                        await ws.wait_writable()
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass  # reported by _check below
                    nursery.cancel_scope.cancel()

                async def until_changed() -> None:
                    await changed.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(until_writable)
                nursery.start_soon(until_changed)
            self._check()

    async def send_message(self, text: str) -> None:
        """Send a text message, ordered with the data around it.

        Raises:
            ChannelBroken, trio.BrokenResourceError, trio.ClosedResourceError: as ``send_all``.
        """
        if not isinstance(text, str):
            raise TypeError("send_message takes a str; send bytes with send_all")
        self._check()
        ws = await self._socket()
        try:
            await ws.send(text)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise self._failed(exc) from exc

    async def aclose(self) -> None:
        """End the stream cleanly: the reader gets every byte, then ``b""``.

        Connects first if nothing was sent yet, so an empty stream still ends. If a
        ``send_all`` is blocked in another task, the connection is dropped instead (that
        ``send_all`` raises ``ClosedResourceError``) and the reader sees a lost writer, never
        a clean end. If ``aclose`` itself is cancelled, the close finishes in the background.
        """
        await self._finish(NORMAL_CLOSURE, "")

    close = aclose

    async def abort(self, reason: str = "aborted", *, code: int = WRITER_ABORTED) -> None:
        """End the stream with an error: the reader gets :class:`ChannelAborted` with ``code``
        (4000-4999 or 1011) and ``reason``, after the data already sent.

        Raises:
            ValueError: ``code`` is not an application close code.
        """
        if not (4000 <= code <= 4999 or code == 1011):
            raise ValueError("abort codes are 4000-4999 or 1011")
        await self._finish(code, reason)

    async def _finish(self, code: int, reason: str) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        self._wake()
        if self._sending:
            # Data is half-way out: the byte stream has no clean end. Drop the connection,
            # which also wakes the blocked send_all.
            assert self._ws is not None
            await self._ws.abort()
            return
        try:
            await self._close_socket(code, reason)
        except trio.Cancelled:
            # A connected socket was dropped (the reader sees a lost writer). One that never
            # attached would leave the reader waiting: attach and close in the background.
            if self._ws is None and self._attach_on_close and self._error is None:
                _spawn(self._nursery, self._close_socket, code, reason)
            raise

    async def _close_socket(self, code: int, reason: str) -> None:
        ws = self._ws
        if ws is None and self._error is None and self._attach_on_close:
            with trio.move_on_after(CLOSE_CONNECT_TIMEOUT):
                try:
                    ws = await self._socket()
                except ChannelRefused as exc:
                    # 404/409: the ref was handed on and used, or the channel is over.
                    logger.debug("channel %s: writer end not needed (%s)", self.ref.channel_id, exc)
                except trio.BrokenResourceError as exc:
                    logger.warning(
                        "could not deliver the end of channel %s: %s", self.ref.channel_id, exc
                    )
        if ws is not None:
            await ws.close(code, reason)


def _spawn(nursery: trio.Nursery, fn: Callable[..., Awaitable[object]], *args: object) -> None:
    try:
        nursery.start_soon(fn, *args)
    except RuntimeError:  # the owning nursery has closed: nobody is left to do it
        logger.debug("could not finish closing a channel end: its owner is gone")


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
        self._guard = _Guard("receiving on this channel reader")
        self._closed = False
        self._close_with: tuple[int, str] = (1001, "reader went away")
        self._attach_on_close = attach_on_close
        self._pump_scope: trio.CancelScope | None = None
        self._pump_done = trio.Event()
        self.bytes_received = 0

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
        if isinstance(item, bytes):
            self.bytes_received += len(item)
        return item

    def _ended(self, exc: ConnectionClosed) -> None:
        """The engine closed the socket: a clean end, or the error every receive raises."""
        self._end = (exc.code, exc.reason)
        if not _is_clean(exc.code):
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
                _spawn(self._nursery, self._attach_and_close, code, reason)
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


@attrs.frozen
class Channel:
    """A channel made by this worker: local ends plus the refs to hand to others."""

    writer: ChannelWriter
    reader: ChannelReader
    writer_ref: StreamChannelRef
    reader_ref: StreamChannelRef
