"""The write end of a channel: :class:`ChannelWriter`, a ``trio.abc.SendStream`` (see
:mod:`._channels` for the theory of operation)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, final

import trio

from .._codes import WRITER_ABORTED
from .._ws import ConnectionClosed, MessageSocket
from .._ws._frames import NORMAL_CLOSURE
from ..protocol import StreamChannelRef
from ._channel_ends import CLOSE_CONNECT_TIMEOUT, ChannelEndpoint, Guard, logger, spawn
from ._channel_errors import ChannelBroken, ChannelRefused, channel_error

#: Largest data frame a writer sends. The official Python reader accepts frames up to 1 MiB.
CHUNK_SIZE: Final = 256 * 1024  # 256 KiB
_SEND_BATCH: Final = 4  # frames per socket write batch


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
        self._guard = Guard("sending on this channel writer")
        self._closed = False
        self._error: ChannelBroken | None = None
        self._attach_on_close = attach_on_close
        self._changed = trio.Event()
        self._sending = False
        self.bytes_sent = 0
        #: Clock time this end last sent something (or was made): a call's deadline
        #: follows it.
        self.last_progress = trio.current_time()

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
                    self.last_progress = trio.current_time()
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
        self.last_progress = trio.current_time()

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
                spawn(self._nursery, self._close_socket, code, reason)
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
