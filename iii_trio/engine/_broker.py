"""The channel broker: pairs one writer socket with one reader socket per channel.

Theory of operation
-------------------
``engine::channels::create`` makes a :class:`BrokeredChannel` with a separate access key per
end. Each end may attach once (``/ws/channels/{id}?key=..&dir=read|write``); the routing
decision (404 unknown id or key, 409 already attached) is made before the upgrade.

The writer's handler reads frames into the channel's buffer while the buffer holds fewer than
``max_bytes`` bytes and ``max_items`` frames; past that it stops reading, so TCP pushes back on
the writer and engine memory stays bounded whatever the stream's size. All channels together
also share one :class:`BufferBudget` (``channel_memory_limit``): once it is spent, only writers
whose buffer is empty may read, so memory stays bounded however many channels are open, and
every stream with a reading reader still moves. The reader's handler
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
import enum
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
    CHANNEL_EXPIRED,
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
from ._config import EngineConfig

logger = logging.getLogger("iii_trio.channels")

CHANNEL_PATH: Final = "/ws/channels/"
#: iii's ``buffer_size`` (frames) default and bounds.
DEFAULT_BUFFER_FRAMES: Final = 64
MAX_BUFFER_FRAMES: Final = 1024


@final
class BufferBudget:
    """Bytes buffered by all channels of one engine, against one limit.

    A channel that must wait for room queues itself once. A release wakes queued channels in
    order, as many as the freed room fits at their last frame's size, so a release costs
    O(woken), never O(channels), and woken writers do not overshoot the limit by much.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._waiting: collections.deque[BrokeredChannel] = collections.deque()

    def spent(self) -> bool:
        return self.used >= self.limit

    def take(self, size: int) -> None:
        self.used += size
        if self.used > self.peak:
            self.peak = self.used

    def release(self, size: int) -> None:
        self.used -= size
        waiting = self._waiting
        room = self.limit - self.used
        while waiting and room > 0:
            channel = waiting.popleft()
            channel.budget_queued = False
            room -= max(channel.last_frame_size, 1)
            channel.notify()

    def wait_for_room(self, channel: BrokeredChannel) -> None:
        """Queue ``channel`` to be notified when room frees up (at most once)."""
        if not channel.budget_queued:
            channel.budget_queued = True
            self._waiting.append(channel)


class _Phase(enum.Enum):
    WAITING = "waiting"  # an end has not attached yet
    STREAMING = "streaming"
    DRAINING = "draining"  # the writer is done; buffered frames still going out
    DONE = "done"


@final
@attrs.define(eq=False, kw_only=True)
class BrokeredChannel:
    channel_id: str
    writer_key: str
    reader_key: str
    owner: str
    created: float
    expires_at: float
    max_items: int
    max_bytes: int
    budget: BufferBudget
    buffer: collections.deque[str | bytes] = attrs.field(factory=collections.deque)
    buffered_bytes: int = 0
    writer_attached: bool = False
    reader_attached: bool = False
    writer_running: bool = False
    reader_running: bool = False
    #: How the writer ended: ``(1000, "")`` for a clean EOF, else the abort code and reason.
    writer_end: tuple[int, str] | None = None
    #: Why the reader side ended early (or expired); ``None`` while it may still read.
    reader_end: tuple[int, str] | None = None
    delivered: bool = False  # the reader got the final close (end of stream)
    expired: bool = False
    removed: bool = False
    bytes_in: int = 0
    bytes_out: int = 0
    frames_in: int = 0
    writer_scope: trio.CancelScope | None = None
    #: The reader's socket while its pump runs, and whether the pump holds a batch.
    reader_socket: MessageSocket | None = None
    pumping: bool = False
    budget_queued: bool = False
    last_frame_size: int = 0
    _waiters: trio.lowlevel.ParkingLot = attrs.field(factory=trio.lowlevel.ParkingLot)

    def notify(self) -> None:
        """Wake the tasks waiting for a change (cheap when nobody waits: once per frame)."""
        if self._waiters:
            self._waiters.unpark_all()

    async def wait_changed(self) -> None:
        await self._waiters.park()

    def full(self) -> bool:
        """No room for another frame: this channel's own limits, or the shared budget."""
        if self.buffered_bytes >= self.max_bytes or len(self.buffer) >= self.max_items:
            return True
        if self.buffer and self.budget.spent():
            self.budget.wait_for_room(self)
            return True
        return False

    def add(self, message: str | bytes) -> None:
        size = len(message)
        self.buffer.append(message)
        self.buffered_bytes += size
        self.budget.take(size)
        self.bytes_in += size
        self.frames_in += 1
        self.last_frame_size = size
        self.notify()

    def hand_over(self, message: str | bytes) -> bool:
        """Give ``message`` straight to an in-process reader, if nothing is ahead of it (no
        buffered frame, no batch being sent) and its socket takes it now: no buffering, no
        pump task in between. False, having done nothing, otherwise."""
        reader = self.reader_socket
        if reader is None or not reader.in_process or self.buffer or self.pumping:
            return False
        if not reader.send_many_nowait((message,)):
            return False
        size = len(message)
        self.bytes_in += size
        self.bytes_out += size
        self.frames_in += 1
        return True

    def take_all(self) -> tuple[list[str | bytes], int]:
        """Everything buffered and its size. The bytes stay counted against the engine's
        budget until the caller has sent them and calls ``budget.release(size)``."""
        batch = list(self.buffer)
        size = self.buffered_bytes
        self.buffer.clear()
        self.buffered_bytes = 0
        self.notify()
        return batch, size

    def clear(self) -> None:
        """Drop the buffer (taken, or nobody will read it) and give its bytes back."""
        self.buffer.clear()
        released, self.buffered_bytes = self.buffered_bytes, 0
        self.budget.release(released)
        self.notify()

    @property
    def phase(self) -> _Phase:
        if self.removed:
            return _Phase.DONE
        if not (self.writer_attached and self.reader_attached):
            return _Phase.WAITING
        if self.writer_end is not None:
            return _Phase.DRAINING
        return _Phase.STREAMING

    def stop_writer(self, code: int, reason: str) -> None:
        """The reader is gone (or the channel expired): make the writer's handler close it."""
        if self.reader_end is None:
            self.reader_end = (code, reason)
        self.clear()
        if self.writer_scope is not None:
            self.writer_scope.cancel()
        self.notify()


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
            ChannelLimitExceeded: ``owner`` holds too many live channels.
        """
        limit = self._config.max_channels_per_worker
        if self._by_owner[owner] >= limit:
            raise ChannelLimitExceeded(f"more than {limit} live channels for one worker")
        frames = DEFAULT_BUFFER_FRAMES if buffer_size is None else buffer_size
        now = self._now()
        channel = BrokeredChannel(
            channel_id=new_uuid(),
            writer_key=secrets.token_urlsafe(24),
            reader_key=secrets.token_urlsafe(24),
            owner=owner,
            created=now,
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
                c for c in order if not c.removed and not (c.writer_attached and c.reader_attached)
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
        attached = channel.writer_attached if writing else channel.reader_attached
        if attached:
            logger.info("refused second %s end of channel %s from %s", direction, channel_id, peer)
            return Reject(
                409,
                f"the {direction} end of channel {channel_id} is already attached; "
                "each end can be attached once\n",
            )
        if writing:
            channel.writer_attached = True
            channel.writer_running = True
            handler = partial(self._serve_writer, channel)
        else:
            channel.reader_attached = True
            channel.reader_running = True
            handler = partial(self._serve_reader, channel)
        channel.notify()
        return Accept(handler, max_message_size=self._config.max_channel_frame)

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
                            channel.add(message)
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
            channel.writer_running = False
            channel.notify()
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
            channel.reader_running = False
            self._maybe_remove(channel)

    async def _pump_to_reader(self, channel: BrokeredChannel, ws: MessageSocket) -> bool:
        """Send buffered frames, then the writer's end; True once the end was delivered."""
        channel.reader_socket = ws
        try:
            while channel.reader_end is None:
                if channel.buffer:
                    batch, size = channel.take_all()
                    channel.pumping = True
                    try:
                        await ws.send_many(batch)
                    finally:
                        # Counted until written: a slow reader's batch is engine memory too.
                        del batch
                        channel.budget.release(size)
                        channel.pumping = False
                    channel.bytes_out += size
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
        if channel.removed:
            return
        both_attached = channel.writer_attached and channel.reader_attached
        if both_attached and not channel.writer_running and not channel.reader_running:
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
        channel.expired = True
        if channel.writer_attached and not channel.reader_attached:
            channel.stop_writer(CHANNEL_EXPIRED, "channel expired: the reader never attached")
        elif channel.reader_attached and not channel.writer_attached:
            channel.writer_end = (CHANNEL_EXPIRED, "channel expired: the writer never attached")
            channel.notify()
        self._remove(channel)

    async def run(self) -> None:
        """Expire channels whose ends did not all attach within the TTL. Runs until cancelled."""
        while True:
            order = self._expiry_order
            while order and (
                order[0].removed or (order[0].writer_attached and order[0].reader_attached)
            ):
                order.popleft()
            if not order:
                self._created = trio.Event()
                await self._created.wait()
                continue
            channel = order[0]
            await trio.sleep_until(channel.expires_at)
            if self._expiry_order and self._expiry_order[0] is channel:
                self._expiry_order.popleft()
            if not channel.removed and not (channel.writer_attached and channel.reader_attached):
                logger.info("channel %s expired", channel.channel_id)
                self._expire(channel)

    def describe(self) -> list[JSON]:
        now = self._now()
        return [
            {
                "channel_id": c.channel_id,
                "state": c.phase.value,
                "owner": c.owner,
                "writer_attached": c.writer_attached,
                "reader_attached": c.reader_attached,
                "bytes_in": c.bytes_in,
                "bytes_out": c.bytes_out,
                "frames_in": c.frames_in,
                "buffered_bytes": c.buffered_bytes,
                "age_s": round(now - c.created, 3),
                "expires_in_s": None
                if c.writer_attached and c.reader_attached
                else round(max(c.expires_at - now, 0.0), 3),
            }
            for c in self.channels.values()
        ]

    def next_expiry(self) -> float:
        return self._expiry_order[0].expires_at if self._expiry_order else math.inf
