"""The channel broker: pairs one writer socket with one reader socket per channel.

Theory of operation
-------------------
``engine::channels::create`` makes a :class:`BrokeredChannel` with a separate access key per
end. Each end may attach once (``/ws/channels/{id}?key=..&dir=read|write``); the routing
decision (404 unknown id or key, 409 already attached) is made before the upgrade.

The writer's handler reads frames into the channel while it holds (buffered, or being written
to the reader) fewer than ``max_bytes`` bytes and ``max_items`` frames; past that it stops
reading, so TCP pushes back on the writer and engine memory stays bounded whatever the
stream's size. All channels together also share one byte budget (``channel_memory_limit``):
once it is spent, only channels that hold nothing may read, so memory stays bounded however
many channels are open, and every stream with a reading reader still moves (the state and the
accounting are sans-IO, in :mod:`._channel`). The reader's handler
sends whatever is buffered (coalesced into few socket writes) and, in a second task, watches
the reader socket, so a reader that leaves is noticed even while the writer is idle. A reader
in the engine's own process (``Engine.local_dialer``) with room in its socket gets each frame
straight from the writer's handler when nothing is buffered ahead of it: no task in between;
if the writer is in-process too, from the writer's own task (the socket's ``receive_hook``).

End states are never confused (codes in :mod:`iii_trio._codes`):

* writer closes with 1000 or no status → reader gets every buffered frame, then 1000;
* writer closes with any other code → reader gets the buffered frames, then that code/reason;
* writer's connection drops without a Close → reader gets 4001 (WRITER_LOST);
* reader closes (4002) or drops (4003) first → the writer is closed with that code at once;
* an end that never attaches within the TTL → the other end gets 4004 (CHANNEL_EXPIRED).

A channel leaves the table as soon as no end can attach any more and both handlers are done,
or when it expires.
"""

from __future__ import annotations

import collections
import hmac
import logging
import math
import secrets
from collections.abc import Callable
from functools import partial
from typing import Final, final

import attrs
import trio

from .._codes import (
    CHANNEL_ENGINE_SHUTDOWN,
    CLEAN_EOF,
    READER_CLOSED,
    READER_LOST,
    WRITER_LOST,
)
from .._ws import (
    Accept,
    ConnectionClosed,
    HandshakeRequest,
    MemoryWebSocket,
    MessageSocket,
    Reject,
)
from .._ws._frames import ABNORMAL_CLOSURE, NO_STATUS, NORMAL_CLOSURE
from ..protocol import JSON, new_uuid
from ._builtins import ChannelLimitExceeded
from ._channel import BufferBudget, ChannelState, Direction
from ._config import EngineConfig

logger = logging.getLogger("iii_trio.channels")

CHANNEL_PATH: Final = "/ws/channels/"
#: iii's ``buffer_size`` (frames) default and bounds.
DEFAULT_BUFFER_FRAMES: Final = 64
MAX_BUFFER_FRAMES: Final = 1024


@final
@attrs.define(eq=False, kw_only=True)
class BrokeredChannel(ChannelState):
    """A channel's state plus what its two handlers share: the tasks waiting for a change,
    the writer's cancel scope and the reader's socket."""

    #: The writer handler's scope (``stop_writer`` cancels it when the reader goes away).
    writer_scope: trio.CancelScope | None = None
    #: The reader's socket while its pump runs, and whether the pump holds a batch.
    reader_socket: MessageSocket | None = None
    pumping: bool = False
    _waiters: trio.lowlevel.ParkingLot = attrs.field(factory=trio.lowlevel.ParkingLot)

    def __attrs_post_init__(self) -> None:
        self.wake = self._wake_waiters

    def _wake_waiters(self) -> None:
        # Cheap when nobody waits: this runs once per frame.
        if self._waiters:
            self._waiters.unpark_all()

    async def wait_changed(self) -> None:
        await self._waiters.park()

    def hand_over(self, message: str | bytes) -> bool:
        """Give ``message`` straight to an in-process reader, if nothing is ahead of it (no
        buffered frame, no batch being sent) and its socket takes it now: no buffering, no
        pump task in between. False, having done nothing, otherwise."""
        reader = self.reader_socket
        if reader is None or not reader.in_process or self.buffer or self.pumping:
            return False
        if not reader.send_many_nowait((message,)):
            return False
        self.passed_through(len(message), trio.current_time())
        return True

    def stop_writer(self, code: int, reason: str) -> None:
        """The reader is gone (or the channel expired): make the writer's handler close it."""
        super().stop_writer(code, reason)
        if self.writer_scope is not None:
            self.writer_scope.cancel()


async def _goodbye(ws: MessageSocket) -> None:
    """The engine is stopping under this end: tell its peer (1001) rather than vanish."""
    if not ws.closed:
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            await ws.close(CHANNEL_ENGINE_SHUTDOWN, "engine shutting down")


def _writer_end(exc: ConnectionClosed) -> tuple[int, str]:
    if exc.code in (NORMAL_CLOSURE, NO_STATUS):
        return CLEAN_EOF, ""
    if exc.code == ABNORMAL_CLOSURE:
        return WRITER_LOST, "writer connection lost before the end of the stream"
    return exc.code, exc.reason


def _reader_end(exc: ConnectionClosed) -> tuple[int, str]:
    if exc.code == ABNORMAL_CLOSURE:
        return READER_LOST, "reader connection lost"
    if 4000 <= exc.code <= 4999:
        return exc.code, exc.reason or "reader closed"
    return READER_CLOSED, "reader closed the channel"


@final
class ChannelBroker:
    """All live channels of one engine."""

    def __init__(
        self,
        config: EngineConfig,
        now: Callable[[], float] = trio.current_time,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self._config = config
        self._now = now
        self._on_change = on_change
        self.channels: dict[str, BrokeredChannel] = {}
        self._by_owner: collections.Counter[str] = collections.Counter()
        self._expiry_order: collections.deque[BrokeredChannel] = collections.deque()
        self._created = trio.Event()
        self.budget = BufferBudget(config.channel_memory_limit)
        self.finished = 0  # channels that ended, for statistics

    # --- creation and attachment -----------------------------------------------------------

    def create(self, owner: str, buffer_size: int | None) -> dict[str, JSON]:
        """Create a channel and return iii's ``{"writer": ref, "reader": ref}``.

        Raises:
            ChannelLimitExceeded: ``owner``, or the whole engine, holds too many live
                channels.
        """
        limit = self._config.max_channels_per_worker
        if self._by_owner[owner] >= limit:
            raise ChannelLimitExceeded(f"more than {limit} live channels for one worker")
        if len(self.channels) >= self._config.max_channels:
            raise ChannelLimitExceeded(
                f"the engine holds {len(self.channels)} live channels, its limit (max_channels)"
            )
        frames = DEFAULT_BUFFER_FRAMES if buffer_size is None else buffer_size
        now = self._now()
        channel = BrokeredChannel(
            channel_id=new_uuid(),
            writer_key=secrets.token_urlsafe(24),
            reader_key=secrets.token_urlsafe(24),
            owner=owner,
            created=now,
            last_progress=now,
            expires_at=now + self._config.channel_ttl,
            max_items=min(max(frames, 1), MAX_BUFFER_FRAMES),
            max_bytes=self._config.channel_buffer_bytes,
            budget=self.budget,
        )
        self.channels[channel.channel_id] = channel
        self._by_owner[owner] += 1
        order = self._expiry_order
        if len(order) > 2 * len(self.channels) + 64:
            # Finished channels stay in the expiry queue until the TTL sweep reaches them;
            # drop them now and then so the queue stays proportional to the live channels.
            self._expiry_order = order = collections.deque(
                c for c in order if not c.removed and not c.both_attached
            )
        order.append(channel)
        self._created.set()
        self._on_change()
        return {
            "writer": {
                "channel_id": channel.channel_id,
                "access_key": channel.writer_key,
                "direction": "write",
            },
            "reader": {
                "channel_id": channel.channel_id,
                "access_key": channel.reader_key,
                "direction": "read",
            },
        }

    def route(self, request: HandshakeRequest, peer: str) -> Accept | Reject:
        """Decide an upgrade request for ``/ws/channels/{id}``."""
        channel_id = request.path[len(CHANNEL_PATH) :]
        key = request.query.get("key", "")
        direction = request.query.get("dir")
        if not key or direction not in ("read", "write"):
            return Reject(400, "channel sockets need ?key=<access key>&dir=read|write\n")
        channel = self.channels.get(channel_id)
        writing = direction == "write"
        expected = "" if channel is None else channel.writer_key if writing else channel.reader_key
        if channel is None or not hmac.compare_digest(key.encode(), expected.encode()):
            logger.info(
                "refused %s end of channel %s from %s: not found", direction, channel_id, peer
            )
            return Reject(404, "Channel not found\n")
        end: Direction = "write" if writing else "read"
        if channel.attached(end) or channel.expired:
            logger.info("refused second %s end of channel %s from %s", direction, channel_id, peer)
            return Reject(
                409,
                f"the {direction} end of channel {channel_id} is already attached; "
                "each end can be attached once\n",
            )
        channel.attach(end)
        handler = partial(self._serve_writer if writing else self._serve_reader, channel)
        return Accept(
            handler,
            max_message_size=self._config.max_channel_frame,
            max_message_frames=self._config.max_message_frames,
        )

    # --- the two ends ----------------------------------------------------------------------

    async def _serve_writer(self, channel: BrokeredChannel, ws: MessageSocket) -> None:
        # Hot loop: one cancel scope for the whole stream (stop_writer cancels it when the
        # reader goes away), no per-frame allocations beyond the frame itself.
        if isinstance(ws, MemoryWebSocket):
            # An in-process writer's frames go straight on to an in-process reader from the
            # writer's own task when nothing is ahead of them (see hand_over).
            ws.receive_hook = channel.hand_over
        try:
            with trio.CancelScope() as scope:
                channel.writer_scope = scope
                if channel.reader_end is not None:
                    scope.cancel()
                try:
                    while True:
                        if channel.full():
                            # Held back: keep only the bytes already read, not a bulk-sized
                            # read buffer, while this writer waits (1000s of them may).
                            ws.trim_receive_buffer()
                            while channel.full():
                                await channel.wait_changed()
                        message = await ws.receive()
                        if not channel.hand_over(message):
                            channel.add(message, trio.current_time())
                except ConnectionClosed as exc:
                    channel.writer_end = _writer_end(exc)
                    return
                finally:
                    channel.writer_scope = None
            # Only stop_writer cancels the scope: the reader left (or the channel expired).
            assert channel.reader_end is not None
            code, reason = channel.reader_end
            channel.writer_end = (code, reason)
            await ws.close(code, reason)
        finally:
            if isinstance(ws, MemoryWebSocket):
                ws.receive_hook = None
            if channel.writer_end is None:
                channel.writer_end = (CHANNEL_ENGINE_SHUTDOWN, "engine shutting down")
                await _goodbye(ws)
            channel.finish("write")
            self._maybe_remove(channel)

    async def _serve_reader(self, channel: BrokeredChannel, ws: MessageSocket) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_reader, channel, ws, nursery.cancel_scope)
                if await self._pump_to_reader(channel, ws):
                    nursery.cancel_scope.cancel()
                # Otherwise the reader's socket failed under the pump; the watcher sees why
                # (a Close with a code, or a dropped connection) and ends the nursery.
        finally:
            if not channel.delivered and channel.reader_end is None:
                channel.stop_writer(CHANNEL_ENGINE_SHUTDOWN, "engine shutting down")
                await _goodbye(ws)
            channel.finish("read")
            self._maybe_remove(channel)

    async def _pump_to_reader(self, channel: BrokeredChannel, ws: MessageSocket) -> bool:
        """Send buffered frames, then the writer's end; True once the end was delivered."""
        channel.reader_socket = ws
        try:
            while channel.reader_end is None:
                if channel.buffer:
                    batch, size = channel.take_all()
                    channel.pumping = True
                    written = False
                    try:
                        await ws.send_many(batch)
                        written = True
                    finally:
                        # Held until written: a slow reader's batch is engine memory too.
                        del batch
                        channel.written(size, trio.current_time(), delivered=written)
                        channel.pumping = False
                elif channel.writer_end is not None:
                    code, reason = channel.writer_end
                    channel.delivered = True
                    await ws.close(code, reason)
                    return True
                else:
                    await channel.wait_changed()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the reader closed or vanished
        finally:
            channel.reader_socket = None
        return False

    async def _watch_reader(
        self, channel: BrokeredChannel, ws: MessageSocket, scope: trio.CancelScope
    ) -> None:
        try:
            while True:
                await ws.receive()  # readers have nothing to say; data frames are dropped
        except trio.ClosedResourceError:
            return  # the pump closed the socket after delivering the end of the stream
        except ConnectionClosed as exc:
            if not channel.delivered:
                code, reason = _reader_end(exc)
                channel.stop_writer(code, reason)
                scope.cancel()

    # --- lifetime ------------------------------------------------------------------------

    def _maybe_remove(self, channel: BrokeredChannel) -> None:
        if not channel.removed and channel.finished:
            self._remove(channel)

    def _remove(self, channel: BrokeredChannel) -> None:
        channel.removed = True
        channel.clear()
        self.channels.pop(channel.channel_id, None)
        self._by_owner[channel.owner] -= 1
        if self._by_owner[channel.owner] <= 0:
            del self._by_owner[channel.owner]
        self.finished += 1
        self._on_change()
        end = channel.writer_end or (0, "")
        state = "expired" if channel.expired else "clean" if end[0] == CLEAN_EOF else "aborted"
        if channel.reader_end is not None and not channel.expired:
            state = "reader-closed"
        logger.info(
            "channel %s ended %s: %d bytes in %d frames, %.3fs, end code %s %s",
            channel.channel_id,
            state,
            channel.bytes_in,
            channel.frames_in,
            self._now() - channel.created,
            end[0],
            end[1],
        )

    def _expire(self, channel: BrokeredChannel) -> None:
        channel.expire()
        if channel.writer_scope is not None:
            channel.writer_scope.cancel()  # it closes its socket with the reader_end (4004)
        self._remove(channel)

    async def run(self) -> None:
        """Expire channels whose ends did not all attach within the TTL. Runs until cancelled."""
        while True:
            order = self._expiry_order
            while order and (order[0].removed or order[0].both_attached):
                order.popleft()
            if not order:
                self._created = trio.Event()
                await self._created.wait()
                continue
            channel = order[0]
            await trio.sleep_until(channel.expires_at)
            if self._expiry_order and self._expiry_order[0] is channel:
                self._expiry_order.popleft()
            if not channel.removed and not channel.both_attached:
                logger.info("channel %s expired", channel.channel_id)
                self._expire(channel)

    def release(self, channel_id: str) -> None:
        """The creator stops offering ``channel_id``: an end that never attached expires now
        instead of at the TTL (its attached peer learns it as at the TTL, code 4004). The
        HTTP server drops a request's channels so once its response is decided, as iii does;
        ends already attached go on."""
        channel = self.channels.get(channel_id)
        if channel is not None and not channel.removed and not channel.both_attached:
            logger.debug("channel %s released before all its ends attached", channel_id)
            self._expire(channel)

    def progress_of(self, channel_id: str) -> BrokeredChannel | None:
        """The live channel ``channel_id``, whose ``last_progress`` a call's deadline follows."""
        return self.channels.get(channel_id)

    def describe(self) -> list[JSON]:
        now = self._now()
        return [c.describe(now) for c in self.channels.values()]

    def next_expiry(self) -> float:
        return self._expiry_order[0].expires_at if self._expiry_order else math.inf
