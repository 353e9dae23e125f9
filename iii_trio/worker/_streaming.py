"""Streaming calls in one block: :meth:`Worker.stream_to` (you write, the function reads) and
:meth:`Worker.stream_from` (the function writes, you read), each returning the function's
result.

Theory of operation
-------------------
The helper creates a channel owned by the block, puts the function's end in the payload under
``ref_key``, and runs the call in a task while the block runs with the other end. The order
that cannot deadlock is built in:

* on a normal exit the writer ends the stream cleanly *before* the result is awaited (the
  function sees its end of stream and can answer); for ``stream_from``, the reader is closed;
* an exception in the block aborts the channel (the function's end raises ``ChannelAborted``
  with the exception's name) and stops waiting for the call; the exception leaves the block
  as itself;
* if the call fails while the block still runs (no such function, the function raised), the
  block is cancelled and the call's error leaves it; so does a ``ChannelBroken`` in the block
  that the function's failure caused (the call's error is the better explanation, chained).

The call's deadline follows the stream's progress (see :mod:`._calls`): a transfer is never cut
while its bytes flow, and a stalled one fails with ``InvocationTimeout`` saying it stalled.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, final

import trio

from .._errors import IIIError
from .._unwrap import open_nursery
from ._channel_errors import ChannelBroken
from ._channels import Channel, ChannelReader, ChannelWriter
from ._dispatch import abort_ends

#: Seconds a block that failed with a broken channel waits for the call's own error.
CAUSE_GRACE: Final = 2.0

CreateChannel = Callable[[trio.Nursery, int | None], Awaitable[Channel]]
Trigger = Callable[..., Awaitable[Any]]


class StreamingCall:
    """A call running while its stream flows; its result once the block is done."""

    _own_end: ChannelWriter | ChannelReader

    def __init__(self, function_id: str) -> None:
        self.function_id = function_id
        self._done = trio.Event()
        self._answered = False
        self._result: Any = None
        self._error: BaseException | None = None

    @property
    def result(self) -> Any:
        """The function's result (after a block that ended normally).

        Raises:
            RuntimeError: the call has no result: the block is still running, or it ended
                with an error (the call's or the block's own).
        """
        if not self._answered:
            raise RuntimeError(f"the call to '{self.function_id}' has no result")
        return self._result

    async def _run(self, trigger: Trigger, payload: Any, timeout: float | None) -> None:
        try:
            self._result = await trigger(self.function_id, payload, timeout=timeout)
            self._answered = True
        except IIIError as exc:
            self._error = exc
        finally:
            self._done.set()


@final
class WriterCall(StreamingCall):
    """A call of a function that reads what you write (:meth:`Worker.stream_to`).

    Attributes:
        writer: your end of the stream: ``send_all`` data, ``send_message`` text.
        function_id: the function called.
    """

    def __init__(self, function_id: str, writer: ChannelWriter) -> None:
        super().__init__(function_id)
        self.writer = writer
        self._own_end: ChannelWriter | ChannelReader = writer


@final
class ReaderCall(StreamingCall):
    """A call of a function that writes what you read (:meth:`Worker.stream_from`).

    Attributes:
        reader: your end of the stream: ``receive_some``/``async for`` data, ``on_message``.
        function_id: the function called.
    """

    def __init__(self, function_id: str, reader: ChannelReader) -> None:
        super().__init__(function_id)
        self.reader = reader
        self._own_end: ChannelWriter | ChannelReader = reader


def _payload_with(payload: Mapping[str, Any] | None, ref_key: str, ref: object) -> dict[str, Any]:
    if payload is not None and not isinstance(payload, Mapping):
        raise TypeError("a streaming call's payload must be a mapping (the channel ref goes in it)")
    body = dict(payload or {})
    if ref_key in body:
        raise ValueError(f"the payload already has {ref_key!r}: the channel ref goes there")
    body[ref_key] = ref
    return body


@asynccontextmanager
async def streaming_call(
    create_channel: CreateChannel,
    trigger: Trigger,
    call: Callable[[Channel], StreamingCall],
    their_ref: Callable[[Channel], object],
    payload: Mapping[str, Any] | None,
    *,
    ref_key: str,
    timeout: float | None,
    buffer_size: int | None,
) -> AsyncIterator[Any]:
    """The block of :meth:`Worker.stream_to` / :meth:`Worker.stream_from` (see the module
    docstring)."""
    async with open_nursery() as nursery:
        channel = await create_channel(nursery, buffer_size)
        ends: list[ChannelReader | ChannelWriter] = [channel.writer, channel.reader]
        running = call(channel)
        body = _payload_with(payload, ref_key, their_ref(channel))
        with trio.CancelScope() as block:

            async def run_call() -> None:
                await running._run(trigger, body, timeout)
                if running._error is not None:
                    block.cancel()  # the block cannot succeed any more

            nursery.start_soon(run_call)
            try:
                yield running
            except BaseException as exc:
                # Only our end is claimed and aborted: the function holds the other one (if
                # the call never reached it, that end expires with the channel's TTL).
                own = running._own_end
                own._attach_on_close = True
                await abort_ends([own], exc)
                if isinstance(exc, ChannelBroken) and not block.cancel_called:
                    with trio.move_on_after(CAUSE_GRACE):
                        await running._done.wait()
                if running._error is not None:
                    # The call failed first: its error is the explanation; the block's own
                    # exception (a broken channel, or the cancellation) is its cause.
                    raise running._error from (None if isinstance(exc, trio.Cancelled) else exc)
                nursery.cancel_scope.cancel()  # stop waiting for the call
                raise
            for end in ends:
                await end.aclose()  # the writer's clean end of stream comes before the result
            await running._done.wait()
        if running._error is not None:
            raise running._error
