"""The channel half of the :class:`~iii_trio.Worker` API (a base class of ``Worker``):
creating channels, opening ends from refs, and streaming calls in one block.

Channels this worker creates are remembered (weakly) by id, so a call whose payload carries
one of their refs can follow its progress (see :mod:`._calls`).
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from .. import _codes as codes
from .._errors import IIIError, InvocationError
from .._unwrap import open_nursery
from ..protocol import StreamChannelRef, structure_ref
from ._channels import Channel, ChannelEndpoint, ChannelReader, ChannelWriter
from ._dispatch import abort_ends, close_ends
from ._streaming import ReaderCall, WriterCall, streaming_call


class ChannelAPI:
    """Channels for a worker. ``Worker`` provides ``trigger``, ``_endpoint`` and the nursery
    that owns channels made outside a block."""

    _endpoint: ChannelEndpoint
    _nursery: trio.Nursery | None

    if TYPE_CHECKING:

        async def trigger(
            self,
            function_id: str,
            payload: Any = None,
            *,
            timeout: float | None = None,
            action: Any = None,
        ) -> Any: ...

    def __init__(self) -> None:
        self._local_channels: weakref.WeakValueDictionary[str, Channel] = (
            weakref.WeakValueDictionary()
        )

    async def create_channel(self, buffer_size: int | None = None) -> Channel:
        """Create a channel owned by this worker (closed, if still open, when it closes).

        Hand ``writer_ref``/``reader_ref`` to another function in a trigger payload and use
        the other local end yourself. ``buffer_size`` is iii's frame count for the engine's
        buffer (the engine also bounds it in bytes).

        Raises:
            InvocationError: the engine refused (e.g. ``limit_exceeded``).
            WorkerDisconnected: the connection dropped meanwhile.
        """
        return await self._create_channel(self._owner_nursery(), buffer_size)

    @asynccontextmanager
    async def open_channel(self, buffer_size: int | None = None) -> AsyncIterator[Channel]:
        """Create a channel whose local ends belong to this block: on a normal exit the
        writer ends the stream cleanly and the reader is closed; on an exception or a
        cancellation both are aborted, so the other side sees an error, never a clean end.
        An exception raised in the block leaves it as itself.

        For the common shapes, :meth:`stream_to` and :meth:`stream_from` also run the call
        and order the end of stream before the result.

        Raises:
            InvocationError: the engine refused to create the channel.
        """
        async with open_nursery() as nursery:
            channel = await self._create_channel(nursery, buffer_size)
            ends: list[ChannelReader | ChannelWriter] = [channel.writer, channel.reader]
            try:
                yield channel
            except BaseException as exc:
                # Claim unused ends too: an end whose ref went to a call that failed would
                # otherwise keep the channel in the engine until its TTL.
                for end in ends:
                    end._attach_on_close = True
                await abort_ends(ends, exc)
                raise
            else:
                await close_ends(ends)

    @asynccontextmanager
    async def stream_to(
        self,
        function_id: str,
        payload: Mapping[str, Any] | None = None,
        *,
        ref_key: str = "reader",
        timeout: float | None = None,
        buffer_size: int | None = None,
    ) -> AsyncIterator[WriterCall]:
        """Call ``function_id`` with a stream you write in the block: the function gets a
        :class:`ChannelReader` in ``payload[ref_key]``; ``call.writer`` is your end.

        ``call.result`` is the function's result after the block. On a normal exit the
        stream ends cleanly *before* the result is awaited (no deadlock); an exception in the
        block aborts the stream (the function's reader raises ``ChannelAborted``) and leaves
        as itself. The call's deadline (``timeout``, default the worker's) counts from the
        stream's last progress, so a long transfer is never cut while it flows.

        Raises:
            FunctionNotFound, InvocationFailed, InvocationTimeout, InvocationStopped,
                WorkerOverloaded, WorkerDisconnected, InvocationError: the call failed (as
                :meth:`trigger`); a stalled stream raises ``InvocationTimeout``.
            ValueError: ``payload`` already has ``ref_key``.
            TypeError: ``payload`` is not a mapping.
        """
        async with streaming_call(
            self._create_channel,
            self.trigger,
            lambda channel: WriterCall(function_id, channel.writer),
            lambda channel: channel.reader_ref,
            payload,
            ref_key=ref_key,
            timeout=timeout,
            buffer_size=buffer_size,
        ) as call:
            yield call

    @asynccontextmanager
    async def stream_from(
        self,
        function_id: str,
        payload: Mapping[str, Any] | None = None,
        *,
        ref_key: str = "writer",
        timeout: float | None = None,
        buffer_size: int | None = None,
    ) -> AsyncIterator[ReaderCall]:
        """Call ``function_id`` with a stream it writes and you read in the block: the
        function gets a :class:`ChannelWriter` in ``payload[ref_key]``; ``call.reader`` is
        your end (``b""`` only after the function's clean end of stream).

        ``call.result`` is the function's result after the block. If the function fails
        mid-stream, its error leaves the block (the reader's ``ChannelAborted`` is its
        context). The deadline rule is :meth:`stream_to`'s.

        Raises:
            FunctionNotFound, InvocationFailed, InvocationTimeout, InvocationStopped,
                WorkerOverloaded, WorkerDisconnected, InvocationError: the call failed.
            ValueError: ``payload`` already has ``ref_key``.
            TypeError: ``payload`` is not a mapping.
        """
        async with streaming_call(
            self._create_channel,
            self.trigger,
            lambda channel: ReaderCall(function_id, channel.reader),
            lambda channel: channel.writer_ref,
            payload,
            ref_key=ref_key,
            timeout=timeout,
            buffer_size=buffer_size,
        ) as call:
            yield call

    def channel_reader(self, ref: StreamChannelRef | Mapping[str, Any]) -> ChannelReader:
        """A live reader for a reader ref (owned by this worker).

        Raises:
            RemoteProtocolError: ``ref`` is not a channel ref.
            ValueError: it is a writer ref.
        """
        return ChannelReader(_ref(ref), self._endpoint, self._owner_nursery())

    def channel_writer(self, ref: StreamChannelRef | Mapping[str, Any]) -> ChannelWriter:
        """A live writer for a writer ref (owned by this worker).

        Raises:
            RemoteProtocolError: ``ref`` is not a channel ref.
            ValueError: it is a reader ref.
        """
        return ChannelWriter(_ref(ref), self._endpoint, self._owner_nursery())

    async def _create_channel(self, nursery: trio.Nursery, buffer_size: int | None) -> Channel:
        refs = await self.trigger("engine::channels::create", {"buffer_size": buffer_size})
        try:
            writer_ref = structure_ref(refs["writer"])
            reader_ref = structure_ref(refs["reader"])
        except (KeyError, TypeError, IIIError) as exc:
            raise InvocationError(
                codes.INVALID_MESSAGE, f"engine::channels::create answered {refs!r}"
            ) from exc
        endpoint = self._endpoint
        channel = Channel(
            writer=ChannelWriter(writer_ref, endpoint, nursery, attach_on_close=False),
            reader=ChannelReader(reader_ref, endpoint, nursery, attach_on_close=False),
            writer_ref=writer_ref,
            reader_ref=reader_ref,
        )
        self._local_channels[writer_ref.channel_id] = channel
        return channel

    def _owner_nursery(self) -> trio.Nursery:
        if self._nursery is None:
            raise RuntimeError("the worker is not running (use connect_worker)")
        return self._nursery


def _ref(ref: StreamChannelRef | Mapping[str, Any]) -> StreamChannelRef:
    if isinstance(ref, StreamChannelRef):
        return ref
    return structure_ref(dict(ref))
